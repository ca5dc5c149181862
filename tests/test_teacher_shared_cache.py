"""Runs sharing one --cache: in-flight leases make each distinct request go out once, and a
dead holder's lease is taken over."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

from scicot_jax.data.synthetic import generate
from scicot_jax.teacher import run_teacher, start_oracle_server
from scicot_jax.teacher.cache import Cache
from scicot_jax.teacher.fakes.batch_server import BatchFaults
from scicot_jax.teacher.fakes.httpserver import request_id
from scicot_jax.teacher.inputs import as_source
from scicot_jax.teacher.runner import RunConfig, TeacherRun

ROOT = Path(__file__).resolve().parents[1]
N, D = 200, 2  # 400 distinct requests (answer_conditioned: one per job)


def _args(tmp_path: Path, url: str, out: str) -> list[str]:
    inp = tmp_path / "in.jsonl"
    if not inp.exists():
        with open(inp, "w") as f:
            for ex in generate("arithmetic", "train", n=N):
                row = {"id": ex.id, "question": ex.question, "answer": ex.answer}
                f.write(json.dumps(row) + "\n")
    return [
        *("run", "--task", "synthetic_arithmetic", "--input", str(inp)),
        *("--backend", "openai", "--base-url", url, "--model", "oracle"),
        *("--prompt", "answer_conditioned", "--samples", str(D), "--temperature", "0.7"),
        *("--cache", str(tmp_path / "shared.sqlite"), "--out", str(tmp_path / out)),
        *("--concurrency", "8", "--no-progress"),
    ]


def test_two_runs_sharing_a_cache_send_each_request_once(tmp_path):
    srv = start_oracle_server(latency_ms=(10, 30))
    try:
        procs = [
            subprocess.Popen(
                [
                    sys.executable,
                    str(ROOT / "tools/query_teacher.py"),
                    *_args(tmp_path, srv.url, o),
                ],
                cwd=ROOT,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
            )
            for o in ("a", "b")
        ]
        outs = [p.communicate(timeout=180) for p in procs]
        received = srv.received()
    finally:
        srv.close()
    for p, (_, err) in zip(procs, outs):
        assert p.returncode == 0, err.decode()[-2000:]
    summaries = [json.loads(o) for o, _ in outs]
    assert len(received) == N * D and max(received.values()) == 1, sum(received.values())
    assert sum(s["sent"] for s in summaries) == N * D
    assert all(s["written"] == N * D for s in summaries)
    with Cache(tmp_path / "shared.sqlite") as c:  # every lease was handed back
        assert c._db.execute("SELECT COUNT(*) FROM leases").fetchone()[0] == 0


def test_leases_block_live_holders_and_pass_from_dead_ones(tmp_path):
    host = socket.gethostname()
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    with Cache(tmp_path / "c.sqlite") as c:
        assert c.lease("k1", f"{host}:{dead.pid + 0}:x", 60) == "leased"
        assert c.lease("k1", "me", 60) == "leased"  # its holder is gone: taken over
        assert c.lease("k2", "other-host:1:x", 60) == "leased"
        assert c.lease("k2", "me", 60) == "busy"  # another machine's live lease
        assert c.lease("k3", "other-host:1:x", 0.05) == "leased"
        time.sleep(0.1)
        assert c.lease("k3", "me", 60) == "leased"  # expired
        c.release_leases("me")
        assert c.lease("k1", "other-host:1:x", 60) == "leased"


def test_an_online_and_a_batch_run_sharing_a_cache_send_each_request_once(tmp_path):
    """A request in a batch job not yet collected is not sent online, and a request an online
    run holds a lease on is not put in a batch job: both runs finish, nothing goes out twice."""
    srv = start_oracle_server(latency_ms=(20, 40), batch_faults=BatchFaults(item_s=0.01))
    tool = [sys.executable, str(ROOT / "tools/query_teacher.py")]
    batch = [*("--mode", "batch", "--batch-poll", "0.05", "--batch-max-requests", "40")]
    pipes = dict(cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        online = subprocess.Popen(tool + _args(tmp_path, srv.url, "online"), **pipes)
        deadline = time.monotonic() + 120
        while sum(srv.received().values()) < 40 and time.monotonic() < deadline:
            time.sleep(0.05)  # the batch run starts while the online run is sending
        procs = [
            online,
            subprocess.Popen(tool + _args(tmp_path, srv.url, "batch") + batch, **pipes),
        ]
        outs = [p.communicate(timeout=180) for p in procs]
        received = srv.received()
        counts = srv.stats()["counts"]
    finally:
        srv.close()
    for p, (_, err) in zip(procs, outs):
        assert p.returncode == 0, err.decode()[-2000:]
    summaries = [json.loads(o) for o, _ in outs]
    assert sum(received.values()) == N * D and max(received.values()) == 1, counts
    sent = [s["sent"] for s in summaries]
    assert sum(sent) == N * D and min(sent) > 0, sent  # both sent some: they overlapped
    assert all(s["written"] == N * D for s in summaries)
    with Cache(tmp_path / "shared.sqlite") as c:
        assert len(c) == N * D
        assert c.db.execute("SELECT COUNT(*) FROM leases").fetchone()[0] == 0


def test_batch_jobs_hold_their_requests_against_online_leases(tmp_path):
    host = socket.gethostname()
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    live, gone = f"{host}:{os.getpid()}:x", f"{host}:{dead.pid}:x"
    with Cache(tmp_path / "c.sqlite") as c:
        for job, holder in (("j-live", live), ("j-gone", gone)):
            c.db.execute(
                "INSERT INTO batch_jobs(id, run, provider, phase, input_path, requests, created,"
                " updated, holder) VALUES (?, 'r', 'openai-chat', 'submitted', '-', 1, 0, 0, ?)",
                (job, holder),
            )
        c.db.execute("INSERT INTO batch_items(job, key, request) VALUES ('j-live', 'k1', '{}')")
        c.db.execute("INSERT INTO batch_items(job, key, request) VALUES ('j-gone', 'k2', '{}')")
        assert c.lease("k1", "me", 60) == "busy"  # a live run polls its job: wait for it
        assert c.lease("k2", "me", 60) == "orphan"  # its run stopped: never sent online
        c.db.execute("UPDATE batch_jobs SET phase='collected' WHERE id='j-live'")
        assert c.lease("k1", "me", 60) == "leased"  # collected without an answer: free again
        assert c.lease("k3", "other-host:1:x", 60) == "leased"
        assert c.leased_by_others(["k1", "k3", "k4"], "me") == {"k3"}  # batch jobs skip k3


def test_an_online_run_leaves_a_stopped_batch_runs_requests_alone(tmp_path):
    """A request in an open job of a batch run that died is not sent online (the provider may
    still answer it there); the job fails with a message that says how to collect it."""
    exs = generate("arithmetic", "train", n=4)
    opts = dict(
        backend="openai", model="oracle", prompt="answer_conditioned", samples=1, temperature=0.0
    )
    cache = tmp_path / "c.sqlite"
    run = TeacherRun(RunConfig(**opts), "synthetic_arithmetic", as_source(exs), cache, tmp_path)
    held = run.requests.requests_for(exs[0], 0)
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    with Cache(cache) as c:
        c.db.execute(
            "INSERT INTO batch_jobs(id, run, provider, phase, input_path, requests, created,"
            " updated, holder) VALUES ('j', 'r', 'openai-chat', 'uploaded', '-', 1, 0, 0, ?)",
            (f"{socket.gethostname()}:{dead.pid}:x",),
        )
        c.db.execute(
            "INSERT INTO batch_items(job, key, request) VALUES ('j', ?, ?)",
            (held.key, held.canonical()),
        )
    with start_oracle_server() as srv:
        s = run_teacher(
            exs,
            card="synthetic_arithmetic",
            cache_path=str(cache),
            out_dir=str(tmp_path / "o"),
            base_url=srv.url,
            progress=False,
            **opts,
        )
        received = srv.received()
    assert s["status"] == "failures" and s["sent"] == 3 and s["written"] == 3, s
    assert "batch jobs of a stopped run" in s["message"]
    assert request_id("oracle", held.prompt, held.seed) not in received
