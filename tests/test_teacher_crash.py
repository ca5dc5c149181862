"""kill -9 of `run` mid-way, then a re-run: exactly-once records, cached keys never re-sent."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from scicot_jax.data.store import RationaleStore
from scicot_jax.data.synthetic import generate
from scicot_jax.teacher import start_oracle_server
from scicot_jax.teacher.cache import Cache
from scicot_jax.teacher.fakes.httpserver import request_id

ROOT = Path(__file__).resolve().parents[1]
N, D, CONCURRENCY = 60, 2, 6


def _cli(args: list[str], **kw) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, str(ROOT / "tools/query_teacher.py"), *args],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        **kw,
    )


def _lines(path: Path) -> int:
    return path.read_bytes().count(b"\n") if path.exists() else 0


def _cached_ids(cache: Path) -> set[str]:
    with Cache(cache) as c:
        return {request_id(q.model, q.prompt, q.seed) for q, _ in c.items()}


def _args(tmp_path: Path, url: str, n: int = N) -> list[str]:
    inp = tmp_path / "in.jsonl"
    with open(inp, "w") as f:
        for ex in generate("arithmetic", "train", n=n):
            f.write(json.dumps({"id": ex.id, "question": ex.question, "answer": ex.answer}) + "\n")
    return [
        "run",
        "--task",
        "synthetic_arithmetic",
        "--input",
        str(inp),
        "--backend",
        "openai",
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
        "--concurrency",
        str(CONCURRENCY),
        "--no-progress",
    ]


def _kill_after(args: list[str], records: Path, n: int) -> None:
    """Starts a run and kill -9s it once `records` has n lines, and this run wrote some."""
    start = _lines(records)  # a busy machine may have let the previous run pass n already
    proc = _cli(args)
    deadline = time.monotonic() + 60
    while _lines(records) < max(n, start + 4) and proc.poll() is None:
        assert time.monotonic() < deadline, "run made no progress"
        time.sleep(0.02)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL


def test_kill_9_then_rerun_is_exactly_once(tmp_path):
    srv = start_oracle_server(latency_ms=(20, 40))
    cache, out = tmp_path / "cache.sqlite", tmp_path / "run"
    args = _args(tmp_path, srv.url)
    try:
        _kill_after(args, out / "records.jsonl", 30)
        first = srv.received()
        cached = _cached_ids(cache)
        assert 30 <= _lines(out / "records.jsonl") < N * D

        rerun = _cli(args)
        stdout, stderr = rerun.communicate(timeout=120)
        assert rerun.returncode == 0, stderr.decode()[-2000:]
        summary = json.loads(stdout)
        second = srv.received() - first
    finally:
        srv.close()
    # Nothing whose response was cached was sent again ...
    assert not (set(second) & cached)
    # ... and what was re-sent is exactly what had no durable response at the kill: requests
    # in flight, or answered but not yet committed by the writer (a few milliseconds' worth).
    resent = set(second) & set(first)
    assert resent == set(first) - cached and len(resent) <= 2 * CONCURRENCY
    assert summary["status"] == "complete" and summary["jobs_skipped"] >= 30
    store = RationaleStore.open(out)
    keys = [r.key for r in store.records()]
    assert len(keys) == len(set(keys)) == N * D  # zero duplicates, nothing lost
    assert {k for _, k in keys} == set(range(D))
    assert store.manifest["invocations"][0]["status"] == "interrupted"  # the killed one
    assert store.manifest["invocations"][1]["status"] == "complete"
    # The second run never re-sent a request whose response the first one had cached.
    assert summary["sent"] == len(set(second)) + sum(
        v - 1 for v in second.values()
    )  # every sent request reached the server


def test_report_after_three_kill_9s_matches_what_the_server_received(tmp_path):
    from scicot_jax.teacher.report import report

    srv = start_oracle_server(latency_ms=(30, 60))
    out = tmp_path / "run"
    args = _args(tmp_path, srv.url)
    try:
        for n in (15, 40, 65):
            _kill_after(args, out / "records.jsonl", n)
        killed = report(out)  # read-only: shows the killed invocations as interrupted
        received_at_kills = sum(srv.received().values())
        rerun = _cli(args)
        _, stderr = rerun.communicate(timeout=120)
        assert rerun.returncode == 0, stderr.decode()[-2000:]
        received = sum(srv.received().values())
    finally:
        srv.close()
    assert [i["status"] for i in killed["invocations"]] == ["interrupted"] * 3
    # Each request is counted (with the lease that guards it) just before it is sent: only a
    # request caught between that commit and the socket write at a kill is counted unreceived.
    assert 0 <= killed["requests"]["sent"] - received_at_kills <= 3 * CONCURRENCY
    final = report(out)
    assert 0 <= final["requests"]["sent"] - received <= 3 * CONCURRENCY
    assert [i["status"] for i in final["invocations"]] == ["interrupted"] * 3 + ["complete"]
    assert final["records"] == N * D
    print(
        f"server received {received}, report says sent {final['requests']['sent']} "
        f"(at the kills: {received_at_kills} vs {killed['requests']['sent']})"
    )


def test_second_writer_on_the_same_run_is_refused(tmp_path):
    srv = start_oracle_server(latency_ms=200)
    args = [
        "run",
        "--task",
        "synthetic_coin_flip",
        "--limit",
        "8",
        "--backend",
        "openai",
        "--base-url",
        srv.url,
        "--model",
        "oracle",
        "--prompt",
        "zero_shot_cot",
        "--cache",
        str(tmp_path / "c.sqlite"),
        "--out",
        str(tmp_path / "run"),
        "--concurrency",
        "1",
        "--no-progress",
    ]
    try:
        a = _cli(args)
        deadline = time.monotonic() + 30
        while not (tmp_path / "run" / "manifest.json").exists():
            assert time.monotonic() < deadline
            time.sleep(0.02)
        b = _cli(args)
        _, err = b.communicate(timeout=60)
        a.send_signal(signal.SIGINT)  # first Ctrl-C: a clean stop
        out_a, err_a = a.communicate(timeout=60)
    finally:
        srv.close()
    assert b.returncode != 0 and b"another teacher run is writing here" in err
    assert a.returncode == 130 and json.loads(out_a)["status"] == "interrupted"
