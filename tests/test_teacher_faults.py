"""Runs against the oracle through the real clients (google-genai and httpx), with faults."""

from __future__ import annotations

import json
import time
from collections import Counter

import pytest

from scicot_jax.data.store import RationaleStore
from scicot_jax.data.synthetic import generate
from scicot_jax.teacher import run_teacher, start_oracle_server, start_replay_server
from scicot_jax.teacher.cache import Cache
from scicot_jax.teacher.fakes.httpserver import request_id

BACKENDS = ["openai", "gemini"]
FAST = dict(backoff_base=0.01, backoff_cap=0.05, timeout=5.0, concurrency=4)


def _run(srv, tmp_path, backend="openai", n=6, samples=1, name="run", examples=None, **kw):
    exs = examples or generate("arithmetic", "train", n=n)
    opts = {**FAST, **kw}
    return run_teacher(
        exs,
        card="synthetic_arithmetic",
        backend=backend,
        model="oracle",
        prompt=opts.pop("prompt", "zero_shot_cot"),
        samples=samples,
        temperature=opts.pop("temperature", 0.7),
        cache_path=str(tmp_path / "cache.sqlite"),
        out_dir=str(tmp_path / name),
        base_url=srv.url,
        **opts,
    )


def _records(tmp_path, name="run"):
    return list(RationaleStore.open(tmp_path / name).records())


@pytest.fixture
def oracle():
    servers = []

    def make(**opts):
        servers.append(start_oracle_server(**opts))
        return servers[-1]

    yield make
    for s in servers:
        s.close()


@pytest.mark.parametrize("backend", BACKENDS)
def test_clean_run_then_rerun_sends_nothing(oracle, tmp_path, backend):
    srv = oracle()
    s = _run(srv, tmp_path, backend, n=8, samples=2)
    assert s["status"] == "complete" and s["written"] == 16 and s["sent"] == 32
    assert s["teacher_accuracy"] == 100.0
    recs = _records(tmp_path)
    assert sorted(r.key for r in recs) == sorted({r.key for r in recs})
    assert all(r.source == "teacher:oracle" and r.extra["seed"] for r in recs)
    assert len({r.extra["seed"] for r in recs}) == 16  # each sample has its own seed
    before = srv.stats()["counts"]
    s2 = _run(srv, tmp_path, backend, n=8, samples=2)
    assert s2["sent"] == 0 and s2["written"] == 0 and srv.stats()["counts"] == before
    # A new run dir over the same cache: every request is a hit, nothing is sent.
    s3 = _run(srv, tmp_path, backend, n=8, samples=2, name="again")
    assert s3["sent"] == 0 and s3["cache_hits"] == 32 and s3["written"] == 16
    again = {r.key: r.rationale for r in _records(tmp_path, "again")}
    assert again == {r.key: r.rationale for r in recs}


@pytest.mark.parametrize("backend", BACKENDS)
def test_429_honours_retry_hint_and_pauses_everyone(oracle, tmp_path, backend):
    # Gemini: the delay comes only from RetryInfo.retryDelay (no header), as from Google.
    srv = oracle(script=["429"], retry_after_s=0.6, retry_after_header=False)
    t = time.monotonic()
    s = _run(srv, tmp_path, backend, n=2, concurrency=1)
    assert s["status"] == "complete" and s["throttled"] == 1 and s["written"] == 2
    assert time.monotonic() - t >= 0.6


@pytest.mark.parametrize("fault", ["500", "503", "malformed", "drop", "slow"])
@pytest.mark.parametrize("backend", BACKENDS)
def test_transient_faults_are_retried(oracle, tmp_path, backend, fault):
    srv = oracle(script=[fault, fault], slow_s=1.5)
    s = _run(srv, tmp_path, backend, n=3, concurrency=2, timeout=0.5)
    assert s["status"] == "complete" and s["written"] == 3
    assert s["retries"] == 2 and s["sent"] == 6 + 2
    assert srv.stats()["counts"][f"fault:{fault}"] == 2


def test_retries_give_up_and_failures_are_not_hits(oracle, tmp_path):
    srv = oracle(script=["500"] * 3)
    s = _run(srv, tmp_path, n=1, concurrency=1, max_retries=2)
    assert s["status"] == "failures" and s["jobs_failed"] == 1 and s["failures"] == 1
    with Cache(tmp_path / "cache.sqlite") as c:
        assert c.failure_count() == 1 and len(c) == 0
    s2 = _run(srv, tmp_path, n=1, concurrency=1)  # a re-run retries the failed request
    assert s2["status"] == "complete" and s2["written"] == 1 and s2["cache_hits"] == 0


def test_other_4xx_is_not_retried(tmp_path):
    # The replay server answers only recorded prompts: anything else is a 404.
    rec = tmp_path / "D_x.json"
    rec.write_text(json.dumps({"metadata": {}, "data": {}}))
    srv = start_replay_server(rec)
    try:
        s = _run(srv, tmp_path, n=2, concurrency=1, max_retries=5)
        assert s["jobs_failed"] == 2 and s["retries"] == 0 and s["sent"] == 2
        assert sum(srv.received().values()) == 2
    finally:
        srv.close()


@pytest.mark.parametrize("backend", BACKENDS)
def test_refused_credentials_stop_the_run(oracle, tmp_path, backend):
    srv = oracle(script=["401"])
    s = _run(srv, tmp_path, backend, n=20, concurrency=1)
    assert s["status"] == "auth" and s["sent"] == 1 and "credentials" in s["message"]


def test_a_failing_endpoint_stops_the_run(tmp_path):
    rec = tmp_path / "D_x.json"
    rec.write_text(json.dumps({"metadata": {}, "data": {}}))
    srv = start_replay_server(rec)  # every prompt is a 404
    try:
        s = _run(srv, tmp_path, n=50, concurrency=2, max_consecutive_failures=5)
    finally:
        srv.close()
    assert s["status"] == "failing" and 5 <= s["sent"] <= 7 and "in a row" in s["message"]


@pytest.mark.parametrize("backend", BACKENDS)
def test_truncation_is_recorded_not_retried(oracle, tmp_path, backend):
    srv = oracle()
    s = _run(srv, tmp_path, backend, n=3, max_tokens=6)
    assert s["truncated"] == 3 and s["retries"] == 0 and s["sent"] == 6
    recs = _records(tmp_path)
    assert all(r.extra["truncated"] and r.extra["finish_reason"] == "length" for r in recs)
    assert all(len(r.rationale.split()) == 6 for r in recs)


@pytest.mark.parametrize("backend", BACKENDS)
def test_daily_quota_stops_the_run_with_a_clear_message(oracle, tmp_path, backend):
    srv = oracle(daily_quota_after=4)
    s = _run(srv, tmp_path, backend, n=10, concurrency=1)
    assert s["status"] == "quota" and "daily" in s["message"]
    assert s["written"] == 2 and s["sent"] == 5  # 4 answered, 1 refused, then nothing
    assert RationaleStore.open(tmp_path / "run").manifest["invocations"][-1]["status"] == "quota"


def test_aimd_and_server_rate_limit(oracle, tmp_path):
    # The server allows 600 requests/min; the client, unlimited, gets 429s, backs off, finishes.
    srv = oracle(server_rpm=600, retry_after_s=None)
    s = _run(srv, tmp_path, n=8, concurrency=8, backoff_base=0.05, backoff_cap=0.3)
    assert s["status"] == "complete" and s["written"] == 8 and s["throttled"] > 0
    # With the client limited below the server's limit, there are no 429s at all.
    srv = oracle(server_rpm=600, retry_after_s=None)
    s2 = _run(
        srv,
        tmp_path,
        n=8,
        name="polite",
        concurrency=8,
        rpm=500,
        examples=generate("arithmetic", "validation", n=8),
    )
    assert s2["status"] == "complete" and s2["throttled"] == 0


def test_max_requests_and_max_cost_stop_cleanly(oracle, tmp_path):
    srv = oracle()
    s = _run(srv, tmp_path, n=10, concurrency=2, max_requests=7)
    assert s["status"] == "max_requests" and s["sent"] == 7 and s["written"] == 3
    s = _run(srv, tmp_path, n=10, concurrency=2)
    assert s["status"] == "complete" and s["jobs_skipped"] == 3 and s["written"] == 7
    assert s["cache_hits"] == 1  # the half-done job's first step
    s = _run(
        srv,
        tmp_path,
        n=10,
        name="wide",
        concurrency=8,
        max_requests=5,
        examples=generate("arithmetic", "validation", n=10),
    )
    assert s["status"] == "max_requests" and s["sent"] == 5  # no overshoot when concurrent
    s = _run(
        srv,
        tmp_path,
        n=10,
        name="costly",
        concurrency=1,
        price_in=1e4,
        price_out=1e4,
        max_cost=5.0,
        examples=generate("arithmetic", "test", n=10),
    )
    assert s["status"] == "max_cost" and 0 < s["cost_usd"] <= 5.0


def test_prompt_kinds_and_error_rate(oracle, tmp_path):
    srv = oracle(error_rate=0.5)
    exs = generate("mc_reasoning", "train", n=30)
    s = run_teacher(
        exs,
        card="synthetic_mc",
        backend="openai",
        model="oracle",
        prompt="answer_conditioned",
        samples=1,
        temperature=0.7,
        cache_path=str(tmp_path / "c.sqlite"),
        out_dir=str(tmp_path / "ac"),
        base_url=srv.url,
        **FAST,
    )
    assert s["status"] == "complete" and 20 <= s["teacher_accuracy"] <= 80
    shots = tmp_path / "shots.jsonl"
    shots.write_text(
        json.dumps(
            {
                "question": "Ann has 3 pens. She gets 2 more. How many pens does Ann have now?",
                "rationale": "3 + 2 = 5.",
                "answer": "B",
                "choices": [["A", "4"], ["B", "5"]],
            }
        )
        + "\n"
    )
    good = start_oracle_server()
    try:
        s = run_teacher(
            exs[:5],
            card="synthetic_mc",
            backend="gemini",
            model="oracle",
            prompt="few_shot",
            exemplars=str(shots),
            samples=2,
            temperature=0.0,
            cache_path=str(tmp_path / "c.sqlite"),
            out_dir=str(tmp_path / "fs"),
            base_url=good.url,
            **FAST,
        )
    finally:
        good.close()
    assert s["status"] == "complete" and s["teacher_accuracy"] == 100.0 and s["written"] == 10


def test_phrasing_varies_with_temperature(oracle, tmp_path):
    srv = oracle()
    exs = generate("coin_flip", "train", n=4)
    kinds = []
    for t in (0.0, 1.0):
        run_teacher(
            exs,
            card="synthetic_coin_flip",
            backend="openai",
            model="oracle",
            prompt="zero_shot_cot",
            samples=6,
            temperature=t,
            cache_path=str(tmp_path / "c.sqlite"),
            out_dir=str(tmp_path / f"t{t}"),
            base_url=srv.url,
            **FAST,
        )
        by_q = Counter()
        for r in _records(tmp_path, f"t{t}"):
            by_q[(r.example_id, r.rationale)] += 1
        kinds.append(len(by_q) / len(exs))
    assert kinds[0] == 1.0 and kinds[1] > 1.5


def test_server_sees_the_cached_request_ids(oracle, tmp_path):
    srv = oracle()
    _run(srv, tmp_path, n=3)
    with Cache(tmp_path / "cache.sqlite") as c:
        ids = {request_id(q.model, q.prompt, q.seed) for q, _ in c.items()}
    assert ids == set(srv.received())
