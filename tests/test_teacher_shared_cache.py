"""Runs sharing one --cache: in-flight leases make each distinct request go out once, and a
dead holder's lease is taken over."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
from pathlib import Path

from scicot_jax.data.synthetic import generate
from scicot_jax.teacher import start_oracle_server
from scicot_jax.teacher.cache import Cache

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
