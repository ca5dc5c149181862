"""kill -9 of a batch-mode run at every phase, and of the batch server mid-job, then a re-run.

Exactly-once: the server sees every request once (no request in two jobs), every record is
written once, and nothing the server answered is lost.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from scicot_jax.data.store import RationaleStore
from scicot_jax.data.synthetic import generate
from scicot_jax.teacher import start_oracle_server
from scicot_jax.teacher.batch import CRASH_ENV, CRASH_POINTS
from scicot_jax.teacher.cache import Cache
from scicot_jax.teacher.fakes.batch_server import BatchFaults
from scicot_jax.teacher.fakes.httpserver import request_id
from scicot_jax.teacher.report import report

ROOT = Path(__file__).resolve().parents[1]
N, D = 8, 2


def _input(tmp_path: Path) -> Path:
    inp = tmp_path / "in.jsonl"
    with open(inp, "w") as f:
        for ex in generate("arithmetic", "train", n=N):
            f.write(json.dumps({"id": ex.id, "question": ex.question, "answer": ex.answer}) + "\n")
    return inp


def _args(tmp_path: Path, url: str, backend: str) -> list[str]:
    return [
        sys.executable,
        str(ROOT / "tools/query_teacher.py"),
        "run",
        "--task",
        "synthetic_arithmetic",
        "--input",
        str(_input(tmp_path)),
        "--backend",
        backend,
        "--base-url",
        url,
        "--model",
        "oracle",
        "--prompt",
        "zero_shot_cot",
        "--samples",
        str(D),
        "--temperature",
        "0.7",
        "--cache",
        str(tmp_path / "cache.sqlite"),
        "--out",
        str(tmp_path / "run"),
        "--mode",
        "batch",
        "--batch-poll",
        "0.05",
        "--batch-max-requests",
        "6",
        "--no-progress",
    ]


def _check_exactly_once(srv, tmp_path: Path) -> None:
    store = RationaleStore.open(tmp_path / "run")  # raises on a duplicate record
    assert len(store) == N * D
    got = srv.received()
    with Cache(tmp_path / "cache.sqlite") as c:
        sent = [request_id(q.model, q.prompt, q.seed) for q, _ in c.items()]
        assert len(sent) == 2 * N * D and c.failure_count() == 0
    assert all(got[rid] == 1 for rid in sent), "a request was submitted twice"
    assert sum(got.values()) == 2 * N * D
    assert report(tmp_path / "run")["batch_jobs"]["in_flight"] == 0


# google-genai takes seconds to import on a loaded 2-core machine: its cases are slow ones.
CASES = [("openai", p) for p in CRASH_POINTS] + [
    pytest.param("gemini", p, marks=pytest.mark.slow) for p in CRASH_POINTS
]


@pytest.mark.parametrize("backend,point", CASES)
def test_kill_9_at_each_phase_then_rerun(tmp_path, backend, point):
    with start_oracle_server(batch_faults=BatchFaults(queue_s=0.05)) as srv:
        args = _args(tmp_path, srv.url, backend)
        crashed = subprocess.run(
            args, cwd=ROOT, capture_output=True, env={**os.environ, CRASH_ENV: point}
        )
        assert crashed.returncode == -signal.SIGKILL, crashed.stderr.decode()[-2000:]
        again = subprocess.run(args, cwd=ROOT, capture_output=True, text=True)
        assert again.returncode == 0, again.stderr[-2000:]
        _check_exactly_once(srv, tmp_path)


def _serve(port: int = 0, item_s: float = 0.0) -> tuple[subprocess.Popen, str]:
    proc = subprocess.Popen(
        [
            sys.executable,
            str(ROOT / "tools/query_teacher.py"),
            "serve-oracle",
            "--port",
            str(port),
            "--batch-item-s",
            str(item_s),
        ],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        text=True,
    )
    return proc, json.loads(proc.stdout.readline())["url"]


def test_server_killed_mid_job_loses_nothing(tmp_path):
    srv, url = _serve(item_s=0.2)  # a job of 6 items takes ~1.2 s
    run = subprocess.Popen(
        _args(tmp_path, url, "openai"), cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    try:
        deadline = time.monotonic() + 60
        while not _a_job_submitted(tmp_path / "cache.sqlite"):
            assert time.monotonic() < deadline and run.poll() is None, "no job submitted"
            time.sleep(0.05)
        srv.kill()  # SIGKILL: every job it held is gone
        srv.wait()
        srv, _ = _serve(port=int(url.rsplit(":", 1)[1]))
        out, err = run.communicate(timeout=120)
        assert run.returncode == 0, err.decode()[-2000:]
    finally:
        run.kill()
        srv.kill()
    assert len(RationaleStore.open(tmp_path / "run")) == N * D
    jobs = report(tmp_path / "run")["batch_jobs"]["jobs"]
    assert "lost" in {j["state"] for j in jobs}  # the jobs the dead server held were sent again


def _a_job_submitted(cache: Path) -> bool:
    if not cache.exists():
        return False
    try:
        with Cache(cache, readonly=True) as c:
            row = c.db.execute("SELECT 1 FROM batch_jobs WHERE phase='submitted'").fetchone()
    except Exception:  # not created yet
        return False
    return row is not None


def test_a_second_run_on_the_same_cache_finishes_a_dead_runs_jobs(tmp_path):
    with start_oracle_server(batch_faults=BatchFaults(queue_s=0.05)) as srv:
        args = _args(tmp_path, srv.url, "openai")
        crashed = subprocess.run(
            args, cwd=ROOT, capture_output=True, env={**os.environ, CRASH_ENV: "polled"}
        )
        assert crashed.returncode == -signal.SIGKILL
        at = args.index("--out") + 1
        other = [*args[:at], str(tmp_path / "other"), *args[at + 1 :]]
        done = subprocess.run(other, cwd=ROOT, capture_output=True, text=True)
        assert done.returncode == 0, done.stderr[-2000:]
        assert len(RationaleStore.open(tmp_path / "other")) == N * D
        again = subprocess.run(args, cwd=ROOT, capture_output=True, text=True)
        assert again.returncode == 0, again.stderr[-2000:]
        assert json.loads(again.stdout)["sent"] == 0
        _check_exactly_once(srv, tmp_path)


def test_cancel_stops_the_run_and_a_rerun_finishes(tmp_path):
    from scicot_jax.teacher.cli import main

    # 0.5 s an item: a job of 6 takes 3 s, time enough to cancel it on a loaded machine
    with start_oracle_server(batch_faults=BatchFaults(item_s=0.5)) as srv:
        args = _args(tmp_path, srv.url, "openai")
        proc = subprocess.Popen(args, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        deadline = time.monotonic() + 60
        while not any(j.status == "in_progress" and j.ok for j in srv.batch.listing("openai")):
            assert time.monotonic() < deadline and proc.poll() is None
            time.sleep(0.02)
        assert main(["cancel", str(tmp_path / "run")]) == 0
        _, err = proc.communicate(timeout=60)
        assert proc.returncode == 130 and b"cancelled" in err
        jobs = report(tmp_path / "run")["batch_jobs"]["jobs"]
        assert "cancelled" in {j["state"] for j in jobs}
        assert 0 < sum(j["succeeded"] for j in jobs) < 2 * N * D  # what finished is kept
        srv.batch.faults.item_s = 0.0
        assert main(args[2:]) == 0
        store = RationaleStore.open(tmp_path / "run")
        assert len(store) == N * D
        with Cache(tmp_path / "cache.sqlite") as c:  # sent again: only what was cancelled
            again = {f["key"] for f in c.failures()}
            got = srv.received()
            for q, _ in c.items():
                rid = request_id(q.model, q.prompt, q.seed)
                assert got[rid] == 1 + (q.key in again)
