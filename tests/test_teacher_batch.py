"""--mode batch against the loopback batch servers, through the real clients.

OpenAI's Batch API over HTTP and Gemini's batch mode through google-genai (inline requests and
a JSONL file through the Files API); partial failures, expiry, malformed lines, cancel.
"""

from __future__ import annotations

import json
import time

import httpx
import pytest

from scicot_jax.data.store import RationaleStore
from scicot_jax.data.synthetic import generate
from scicot_jax.teacher import batch_clients, run_teacher, start_oracle_server
from scicot_jax.teacher.cache import Cache
from scicot_jax.teacher.fakes.batch_server import BatchFaults
from scicot_jax.teacher.fakes.httpserver import request_id
from scicot_jax.teacher.inputs import as_source
from scicot_jax.teacher.protocol import FatalRequestError, GenRequest
from scicot_jax.teacher.report import report
from scicot_jax.teacher.runner import RunConfig, TeacherRun

N, D = 12, 2


def _run(srv, tmp_path, backend, name="run", **opts):
    return run_teacher(
        generate("arithmetic", "train", n=N),
        card="synthetic_arithmetic",
        backend=backend,
        model="oracle",
        prompt="zero_shot_cot",
        samples=D,
        temperature=0.7,
        cache_path=str(tmp_path / f"{name}.sqlite"),
        out_dir=str(tmp_path / name),
        base_url=srv.url,
        **{"batch_poll_s": 0.02, **opts},
    )


def _records(run_dir):
    return {r.key: (r.rationale, r.answer) for r in RationaleStore.open(run_dir).records()}


def _submissions_match_failures(srv, cache_path):
    """Every request was sent once, plus once per recorded failure: nothing sent twice."""
    with Cache(cache_path) as c:
        failures = {}
        for f in c.failures():
            failures[f["key"]] = failures.get(f["key"], 0) + 1
        got = srv.received()
        for q, _ in c.items():
            rid = request_id(q.model, q.prompt, q.seed)
            assert got[rid] == 1 + failures.get(q.key, 0), (rid, got[rid])


@pytest.mark.parametrize("backend,inline", [("openai", None), ("gemini", True), ("gemini", False)])
def test_batch_matches_online_and_splits_jobs(tmp_path, monkeypatch, backend, inline):
    if inline is False:  # any job over 10 bytes goes through the Files API
        monkeypatch.setattr(batch_clients, "GEMINI_INLINE_MAX_BYTES", 10)
    with start_oracle_server() as srv:
        online = _run(srv, tmp_path, backend, "online")
        s = _run(
            srv,
            tmp_path,
            backend,
            "batch",
            mode="batch",
            batch_max_requests=10,
            price_in=1.0,
            price_out=2.0,
        )
    assert online["status"] == s["status"] == "complete" and s["written"] == N * D
    assert _records(tmp_path / "batch") == _records(tmp_path / "online")
    rep = report(tmp_path / "batch")
    jobs = rep["batch_jobs"]["jobs"]
    # zero-shot: 24 step-1 requests in 3 jobs of <= 10, then 24 step-2 requests in 3 more
    assert [j["requests"] for j in jobs] == [10, 10, 4, 10, 10, 4]
    assert all(j["state"] == "succeeded" and j["failed"] == 0 for j in jobs)
    tok = rep["tokens"]
    half = (tok["billed_input"] * 1.0 + tok["billed_output"] * 2.0) / 1e6 / 2
    assert rep["batch_jobs"]["spent_usd"] == pytest.approx(half, rel=1e-6) and half > 0


@pytest.mark.parametrize("backend", ["openai", "gemini"])
def test_partial_failures_keep_successes_and_retry(tmp_path, backend):
    faults = BatchFaults(item_error_rate=0.3, seed=3)
    with start_oracle_server(batch_faults=faults) as srv:
        s = _run(srv, tmp_path, backend, mode="batch", batch_attempts=2)
        assert s["status"] == "failures" and 0 < s["jobs_failed"] < N * D
        first = _records(tmp_path / "run")
        assert len(first) == s["written"] > 0
        srv.batch.faults.item_error_rate = 0.0
        again = _run(srv, tmp_path, backend, mode="batch", batch_attempts=4)
        assert again["status"] == "complete" and again["jobs_skipped"] == len(first)
        _submissions_match_failures(srv, tmp_path / "run.sqlite")
    final = _records(tmp_path / "run")
    assert len(final) == N * D and all(final[k] == v for k, v in first.items())


def test_expired_jobs_keep_results_then_fall_back_online(tmp_path):
    faults = BatchFaults(expire_after=5)  # every job expires after answering 5 items
    with start_oracle_server(batch_faults=faults) as srv:
        s = _run(srv, tmp_path, "openai", mode="batch", fallback="online", batch_attempts=2)
        counts = srv.stats()["counts"]
    assert s["status"] == "complete" and s["written"] == N * D
    states = [j["state"] for j in report(tmp_path / "run")["batch_jobs"]["jobs"]]
    assert states and set(states) == {"expired"}
    assert counts["route:chat"] > 0  # the rest went online
    with Cache(tmp_path / "run.sqlite") as c:
        expired = c.db.execute("SELECT COUNT(*) FROM batch_items WHERE outcome='ok'").fetchone()
    assert expired[0] == 5 * len(states)  # each expired job's 5 answers were kept


def test_malformed_lines_are_reported_in_the_error_file():
    with start_oracle_server() as srv, httpx.Client(base_url=srv.url + "/v1") as http:
        good = {
            "custom_id": "a",
            "method": "POST",
            "url": "/v1/chat/completions",
            "body": {"model": "oracle", "messages": [{"role": "user", "content": "Q: hi\nA:"}]},
        }
        lines = [json.dumps(good), "{not json", json.dumps({**good, "custom_id": "a"})]
        up = http.post(
            "/files",
            data={"purpose": "batch"},
            files={"file": ("in.jsonl", "\n".join(lines).encode())},
        )
        fid = up.json()["id"]
        bad = http.post("/batches", json={"input_file_id": fid, "endpoint": "/v1/embeddings"})
        assert bad.status_code == 400
        b = http.post(
            "/batches",
            json={
                "input_file_id": fid,
                "endpoint": "/v1/chat/completions",
                "completion_window": "24h",
            },
        ).json()
        assert b["status"] == "validating"
        for _ in range(200):
            b = http.get(f"/batches/{b['id']}").json()
            if b["status"] == "completed":
                break
            time.sleep(0.02)
        assert b["request_counts"] == {"total": 3, "completed": 1, "failed": 2}
        out = http.get(f"/files/{b['output_file_id']}/content").text.splitlines()
        err = [
            json.loads(x)
            for x in http.get(f"/files/{b['error_file_id']}/content").text.splitlines()
        ]
    assert [json.loads(x)["custom_id"] for x in out] == ["a"]
    messages = sorted(e["error"]["message"] for e in err)
    assert (
        messages[0].startswith("line 2: invalid JSON")
        and "line 3: duplicate custom_id" in messages[1]
    )


def test_bad_batch_requests_are_refused_with_the_reason():
    with start_oracle_server() as srv, httpx.Client(base_url=srv.url + "/v1") as http:
        r = http.post("/files", data={"purpose": "fine-tune"}, files={"file": ("x", b"{}")})
        assert r.status_code == 400 and "purpose 'batch'" in r.json()["error"]["message"]
        r = http.post(
            "/batches",
            json={
                "input_file_id": "file-nope",
                "endpoint": "/v1/completions",
                "completion_window": "24h",
            },
        )
        assert r.status_code == 404
        assert http.get("/batches/batch_nope").status_code == 404


def test_max_cost_stops_before_a_batch_that_could_pass_it(tmp_path):
    with start_oracle_server() as srv:
        # 24 step-1 requests at $1/$2 per 1M tokens, half price: ~$0.0065 upper bound for all;
        # a budget below one job's bound submits nothing.
        s = _run(
            srv,
            tmp_path,
            "openai",
            mode="batch",
            price_in=1.0,
            price_out=2.0,
            max_cost=0.001,
            batch_max_requests=12,
        )
        assert s["status"] == "max_cost" and s["sent"] == 0 and srv.received() == {}
        quote = TeacherRun(
            RunConfig(
                "openai",
                "oracle",
                prompt="zero_shot_cot",
                samples=D,
                mode="batch",
                price_in=1.0,
                price_out=2.0,
            ),
            "synthetic_arithmetic",
            as_source(generate("arithmetic", "train", n=N)),
            tmp_path / "q.sqlite",
            tmp_path / "q",
        ).quote()
    assert quote["mode"] == "batch" and quote["price_per_m_tokens"] == [0.5, 1.0]


def test_replay_server_speaks_batch_too(tmp_path, shared_data):
    from scicot_jax.teacher import start_replay_server

    with start_replay_server(shared_data / "finetune_cot") as srv:
        prompt = next(iter(srv.recordings))
        client = batch_clients.OpenAIBatchClient("completions", base_url=srv.url)
        reqs = [
            GenRequest("openai-completions", "text-davinci-002", prompt, 0.0, 128, 0, 0),
            GenRequest("openai-completions", "text-davinci-002", "not recorded", 0.0, 8, 0, 0),
        ]
        path = tmp_path / "in.jsonl"
        path.write_bytes(b"".join(client.line(r) for r in reqs))
        rid = client.submit("j", client.upload(path, "j"), reqs)
        for _ in range(300):
            if client.status(rid).done:
                break
            time.sleep(0.02)
        got = dict(client.results(rid, {r.key: r for r in reqs}))
        client.close()
    assert got[reqs[0].key].text == srv.recordings[prompt][0][0]
    assert isinstance(got[reqs[1].key], FatalRequestError) and got[reqs[1].key].status == 404


def test_max_requests_caps_what_batches_submit(tmp_path):
    with start_oracle_server() as srv:
        s = _run(srv, tmp_path, "openai", mode="batch", max_requests=7, batch_max_requests=5)
        assert s["status"] == "max_requests" and s["sent"] == 7
        assert sum(srv.received().values()) == 7
    # the 7 submitted were still collected before the run stopped: nothing paid for is lost
    with Cache(tmp_path / "run.sqlite") as c:
        assert len(c) == 7
