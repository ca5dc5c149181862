"""runtime.deadlines on its own (seconds, no jax): a storage call past its deadline and a
SIGTERM while the main thread is stuck in storage both end the process in bounded time."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
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
    lines = p.stderr.read().strip().splitlines()
    err = [x for x in lines if "storage not answering (cannot connect" not in x]  # the log's
    assert len(lines) <= 2 and len(err) == 1, lines
    assert err[0].startswith("prog: error: storage did not answer for 2s:"), err
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


def _refused_then(port: int, after_s: float | None) -> None:
    """Nothing listens on `port`; after `after_s` seconds (None: never) something does."""
    import socket
    import threading

    def listen() -> None:
        time.sleep(after_s)
        srv = socket.create_server(("127.0.0.1", port))
        threading.Event().wait(30)
        srv.close()

    if after_s is not None:
        threading.Thread(target=listen, daemon=True).start()


def test_call_retries_with_backoff_while_refused_and_goes_on_when_storage_is_back(monkeypatch):
    from scicot_jax.runtime import deadlines

    port = _free_port()
    monkeypatch.setenv("STORAGE_EMULATOR_HOST", f"http://127.0.0.1:{port}")
    monkeypatch.setenv("SCICOT_STORAGE_DEADLINE_S", "30")
    _refused_then(port, after_s=2)
    tries = []

    def push() -> str:
        tries.append(time.monotonic())
        if deadlines.unreachable("gs://b/x"):
            raise ConnectionError("Cannot connect to host")
        return "pushed"

    assert deadlines.call("write", "gs://b/x", push) == "pushed"
    gaps = [b - a for a, b in zip(tries, tries[1:])]
    assert len(tries) >= 3 and gaps[-1] > gaps[0] * 1.5, gaps  # backoff grows


def test_call_past_its_budget_is_one_storage_error_naming_path_and_cause(monkeypatch):
    from scicot_jax.runtime import deadlines

    port = _free_port()
    monkeypatch.setenv("STORAGE_EMULATOR_HOST", f"http://127.0.0.1:{port}")
    monkeypatch.setenv("SCICOT_STORAGE_DEADLINE_S", "3")

    def push() -> None:
        raise ConnectionError("Cannot connect to host")

    t0 = time.monotonic()
    try:
        deadlines.call("write", "gs://b/run/results.json", push)
    except deadlines.StorageError as e:
        msg = str(e)
    took = time.monotonic() - t0
    assert "gs://b/run/results.json" in msg and f"cannot connect to 127.0.0.1:{port}" in msg
    assert 1.4 < took < 6, took


def test_call_does_not_retry_an_error_of_the_data_itself():
    from scicot_jax.runtime import deadlines

    tries = []

    def read() -> None:
        tries.append(1)
        raise FileNotFoundError("gone")

    try:
        deadlines.call("read", "/tmp/no-such-file", read)
    except FileNotFoundError:
        pass
    assert tries == [1]


def test_retryable_names_a_lost_upload_a_broken_connection_and_a_busy_server_only():
    from scicot_jax.runtime import deadlines

    class ServiceUnavailable(Exception):  # google.api_core's name for a 503
        pass

    lost = FileNotFoundError("http://h/upload/storage/v1/b/x/o?name=a&upload_id=12")
    try:
        raise RuntimeError("save failed") from lost  # as orbax wraps it
    except RuntimeError as e:
        wrapped = e
    assert "lost an upload" in deadlines.retryable(wrapped, "/tmp/x")
    assert "ConnectionResetError" in deadlines.retryable(ConnectionResetError(), "/tmp/x")
    assert "ServiceUnavailable" in deadlines.retryable(ServiceUnavailable(), "/tmp/x")
    assert deadlines.retryable(FileNotFoundError("/tmp/x/gone"), "/tmp/x") is None
    assert deadlines.retryable(OSError(28, "No space left on device"), "/tmp/x") is None


_NOTHING_TO_SAVE = """
import os, sys
from scicot_jax.runtime import deadlines
with deadlines.watching("scicot-eval"):
    print("running", flush=True)
    os.read(os.pipe()[0], 1)  # e.g. a checkpoint restore that never answers
"""


def test_sigterm_with_nothing_to_save_exits_75_at_once_in_one_line():
    """eval/infer (no SIGTERM handler of their own): exit 75 right away, whatever storage does."""
    p = subprocess.Popen(
        [sys.executable, "-c", _NOTHING_TO_SAVE],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=dict(os.environ, PYTHONPATH=str(ROOT), SCICOT_SHUTDOWN_GRACE_S="60"),
    )
    assert p.stdout.readline().strip() == "running"
    p.send_signal(signal.SIGTERM)
    t0 = time.monotonic()
    assert p.wait(timeout=30) == 75
    err = p.stderr.read().strip().splitlines()
    assert len(err) == 1 and err[0].startswith("scicot-eval: error: stopped by SIGTERM"), err
    assert time.monotonic() - t0 < 3


_POD = """
import os, signal, sys
from scicot_jax.runtime import deadlines
from scicot_jax.runtime import partitioning as part
me, port, waits = int(sys.argv[1]), sys.argv[2], sys.argv[3]
signal.signal(signal.SIGTERM, lambda *a: None)  # as the trainer's: it saves on SIGTERM
with deadlines.watching("prog"):
    part.initialize_distributed(f"127.0.0.1:{port}", 2, me)
    print("ready", flush=True)
    if waits == str(me):  # on a barrier for the other one, as orbax's save does
        from jax._src import distributed
        distributed.global_state.client.wait_at_barrier("never", 600_000)
    with deadlines.storage("save checkpoint", "gs://bucket/model/checkpoints/3"):
        os.read(os.pipe()[0], 1)  # a storage call that never answers
"""


def _pod(waits: str, storage_s: float, grace_s: float) -> list[subprocess.Popen]:
    port = _free_port()
    env = dict(
        os.environ,
        PYTHONPATH=str(ROOT),
        JAX_PLATFORMS="cpu",
        SCICOT_STORAGE_DEADLINE_S=str(storage_s),
        SCICOT_SHUTDOWN_GRACE_S=str(grace_s),
        STORAGE_EMULATOR_HOST=f"http://127.0.0.1:{_free_port()}",  # nothing listens there
    )
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", _POD, str(i), str(port), waits],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )
        for i in range(2)
    ]
    for p in procs:
        assert p.stdout.readline().strip() == "ready", p.stderr.read()[-3000:]
    return procs


def _ends(procs: list[subprocess.Popen], t0: float) -> tuple[list[int], list[float], list[str]]:
    codes, took, errors = [], [], []
    try:
        for p in procs:
            codes.append(p.wait(timeout=120))
            took.append(time.monotonic() - t0)
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    for p in procs:
        lines = p.stderr.read().strip().splitlines()
        err = [x for x in lines if x.startswith("prog: error:")]
        assert len(err) == 1, lines[-30:]
        assert not [x for x in lines if "Traceback" in x or (x[:1] == "F" and x[1:5].isdigit())]
        errors.append(err[0])
    return codes, took, errors


@pytest.mark.slow  # two processes importing jax (~20 s on 2 idle cores)
@pytest.mark.parametrize("waits", ["none", "0", "1"])
def test_two_processes_both_stop_on_a_storage_deadline_none_hangs_on_a_barrier(waits):
    """Both stuck in storage, or one on a barrier for the other (either side, so either the
    coordinator's process or the other stops first): both exit 74 in bounded time, one line."""
    procs = _pod(waits, storage_s=3, grace_s=60)
    codes, took, errors = _ends(procs, time.monotonic())
    print(f"2 processes ({waits} on a barrier): outage -> exit {took[0]:.1f}s, {took[1]:.1f}s")
    assert codes == [74, 74], (codes, errors)
    assert all("gs://bucket/model/checkpoints/3" in e for e in errors), errors
    if waits != "none":
        assert errors[int(waits)].startswith(f"prog: error: process {1 - int(waits)}: "), errors
    assert max(took) < 3 + 10, took


@pytest.mark.slow
def test_sigterm_to_two_processes_stuck_in_storage_exits_75_within_the_grace():
    procs = _pod("none", storage_s=600, grace_s=2)
    for p in procs:
        p.send_signal(signal.SIGTERM)
    codes, took, errors = _ends(procs, time.monotonic())
    print(f"2 processes: SIGTERM -> exit {took[0]:.1f}s, {took[1]:.1f}s (grace 2s)")
    assert codes == [75, 75], (codes, errors)
    assert all("no checkpoint saved: storage unreachable" in e for e in errors), errors
    assert max(took) < 2 + 8, took
