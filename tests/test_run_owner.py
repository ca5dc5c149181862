"""One owner per pipeline run directory (pipeline.owner), local and gs://: a second run is
refused in one line naming the owner; a dead owner's claim passes on."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from scicot_jax.pipeline import owner

ROOT = Path(__file__).resolve().parents[1]
_HOLD = """
import sys, time
from scicot_jax.pipeline import owner
try:
    with owner.own(sys.argv[1]):
        print("owner", flush=True)
        time.sleep(float(sys.argv[2]))
except owner.RunDirBusy as e:
    print("busy", e, flush=True)
"""


def _holder(out: str, seconds: float = 60) -> subprocess.Popen:
    """A process that owns `out` (prints "owner") or is refused ("busy ...")."""
    return subprocess.Popen(
        [sys.executable, "-c", _HOLD, out, str(seconds)],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        text=True,
        env=dict(os.environ, PYTHONPATH=str(ROOT)),
    )


def _first_line(p: subprocess.Popen) -> str:
    return p.stdout.readline().strip()


@pytest.fixture(params=["local", "gs"])
def run_dir(request, tmp_path) -> str:
    if request.param == "local":
        return str(tmp_path / "run")
    bucket = request.getfixturevalue("gcs_bucket")
    return f"{bucket}/owner-{tmp_path.name}"


def test_second_run_is_refused_naming_the_owner_and_a_dead_owners_claim_passes_on(run_dir):
    first = _holder(run_dir)
    try:
        assert _first_line(first) == "owner"
        with pytest.raises(owner.RunDirBusy) as e:  # staggered: the second comes later
            with owner.own(run_dir):
                pass
        msg = str(e.value)
        assert f"host {socket.gethostname()}, pid {first.pid}, started 20" in msg, msg
        assert "\n" not in msg
    finally:
        first.send_signal(signal.SIGKILL)  # dies without releasing anything
        first.wait()
    with owner.own(run_dir) as info:  # the dead owner's claim passes on
        assert info["pid"] == os.getpid()
    with owner.own(run_dir):  # and a finished run's is released
        pass


def test_two_runs_started_at_once_one_owns(run_dir):
    procs = [_holder(run_dir, 5) for _ in range(2)]
    try:
        lines = sorted(_first_line(p) for p in procs)
    finally:
        for p in procs:
            p.kill()
            p.wait()
    assert lines[1] == "owner" and lines[0].startswith("busy "), lines
    assert "another run owns this run directory (host" in lines[0]


def test_gcs_lease_expires_unless_renewed(gcs_bucket, tmp_path):
    from scicot_jax.pipeline.owner import LEASE_OBJECT, _bucket_blob

    out = f"{gcs_bucket}/expiry-{tmp_path.name}"
    bucket, name = _bucket_blob(out)
    other = {"host": "other-vm", "pid": 1, "started": "2026-01-01T00:00:00Z", "owner_id": "x"}
    bucket.blob(name).upload_from_string(json.dumps({**other, "expires": time.time() + 60}))
    with pytest.raises(owner.RunDirBusy, match="host other-vm, pid 1"):
        with owner.own(out):
            pass
    bucket.blob(name).upload_from_string(json.dumps({**other, "expires": time.time() - 1}))
    with owner.own(out, ttl=0.4) as info:  # an expired lease (a VM that vanished) passes on
        time.sleep(1.0)  # renewed meanwhile (every ttl/4): never expires while we run
        held = json.loads(bucket.blob(name).download_as_bytes())
        assert held["owner_id"] == info["owner_id"] and held["expires"] > time.time()
    assert bucket.get_blob(name) is None and name.endswith(LEASE_OBJECT)


def test_pipeline_on_an_owned_out_is_one_line(tmp_path):
    out = str(tmp_path / "run")
    first = _holder(out)
    try:
        assert _first_line(first) == "owner"
        r = subprocess.run(
            [sys.executable, str(ROOT / "tools/run_pipeline.py"), "run", "--task", "synthetic_mc"]
            + ["--out", out, "--methods", "baseline", "--teacher.backend", "oracle"],
            capture_output=True,
            text=True,
            timeout=300,
            env=dict(os.environ, JAX_PLATFORMS="cpu"),
        )
    finally:
        first.kill()
        first.wait()
    assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr[-3000:]
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and f"pid {first.pid}" in lines[0], r.stderr
    assert os.listdir(out) == [owner.LOCAL_FILE]  # the second run wrote nothing
