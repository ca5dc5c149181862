"""runtime.deadlines on its own (seconds, no jax): a storage call past its deadline and a
SIGTERM while the main thread is stuck in storage both end the process in bounded time."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from gcs_emulator import _free_port

ROOT = Path(__file__).resolve().parents[1]
_STUCK = """
import os, signal, sys
from scicot_jax.runtime import deadlines
flag = []
signal.signal(signal.SIGTERM, lambda *a: flag.append(1))  # as the trainer's: sets a flag only
guard = deadlines.Guard("prog", storage_s=float(sys.argv[1])).start()
r, w = os.pipe()
print("stuck", flush=True)
with guard.storage("save checkpoint", "gs://bucket/model/checkpoints/3"):
    os.read(r, 1)  # a storage call that never answers (resumed after every signal)
"""


def _stuck(storage_s: float, grace_s: float) -> subprocess.Popen:
    env = dict(
        os.environ,
        PYTHONPATH=str(ROOT),
        SCICOT_SHUTDOWN_GRACE_S=str(grace_s),
        STORAGE_EMULATOR_HOST=f"http://127.0.0.1:{_free_port()}",  # nothing listens there
    )
    p = subprocess.Popen(
        [sys.executable, "-c", _STUCK, str(storage_s)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    assert p.stdout.readline().strip() == "stuck"
    return p


def test_storage_call_past_its_deadline_exits_74_naming_path_and_cause():
    p = _stuck(storage_s=2, grace_s=60)
    t0 = time.monotonic()
    assert p.wait(timeout=30) == 74
    took = time.monotonic() - t0
    err = p.stderr.read().strip().splitlines()
    assert len(err) == 1 and err[0].startswith("prog: error: storage did not answer for 2s:"), err
    assert "gs://bucket/model/checkpoints/3" in err[0] and "cannot connect to 127.0.0.1" in err[0]
    assert took < 6, took


def test_sigterm_while_stuck_in_storage_exits_75_within_the_grace():
    p = _stuck(storage_s=600, grace_s=1)
    p.send_signal(signal.SIGTERM)
    t0 = time.monotonic()
    assert p.wait(timeout=30) == 75
    took = time.monotonic() - t0
    err = p.stderr.read().strip().splitlines()
    assert len(err) == 1 and "no checkpoint saved: storage unreachable (SIGTERM 1s ago" in err[0]
    assert took < 4, took
