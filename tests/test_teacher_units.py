"""Teacher building blocks: cache, limiter, retry hints, prompts, input validation, pricing."""

from __future__ import annotations

import asyncio
import json
import sqlite3
import threading
import time
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from scicot_jax.data.examples import Example
from scicot_jax.teacher import cache as cache_mod
from scicot_jax.teacher import prompts
from scicot_jax.teacher.backends import (
    gemini_error_details,
    normalise_base_url,
    parse_duration,
    parse_retry_after,
)
from scicot_jax.teacher.cache import Cache
from scicot_jax.teacher.inputs import InputError, jsonl_source, validate_jsonl
from scicot_jax.teacher.jobs import derive_seed
from scicot_jax.teacher.limiter import AdaptiveConcurrency, Limiter, Limits, TokenBucket
from scicot_jax.teacher.pricing import price_for
from scicot_jax.teacher.protocol import GenRequest, GenResponse


def _req(prompt: str = "Q: x\nA:", k: int = 0, **kw) -> GenRequest:
    args = dict(
        provider="openai-chat",
        model="m",
        prompt=prompt,
        temperature=0.7,
        max_tokens=64,
        seed=1,
        sample_index=k,
    )
    return GenRequest(**{**args, **kw})


def test_cache_key_is_canonical_and_covers_every_field():
    a = _req()
    assert a.key == _req().key == GenRequest.from_canonical(a.canonical()).key
    variants = [
        _req(k=1),
        _req(prompt="Q: y\nA:"),
        _req(model="m2"),
        _req(temperature=0.0),
        _req(max_tokens=65),
        _req(seed=2),
        _req(provider="gemini"),
        _req(stop=("\nQ:",)),
    ]
    assert len({v.key for v in variants} | {a.key}) == len(variants) + 1


def test_cache_keys_of_earlier_versions_still_hit():
    """Keys are the sha256 of the canonical JSON: pinned, so existing caches keep hitting."""
    a = GenRequest(
        "openai-chat",
        "gpt-4o-mini",
        "Q: Ann has 3 pens.\nA: Let's think step by step.",
        0.7,
        256,
        1234,
        2,
    )
    b = GenRequest("gemini", "m", 'Q: "\u00e9\u4e2d"\t\x01?', 1, 32, None, 0, ("\nQ:",))
    assert a.key == "232d03371bdccc5ed602e2ebbb1556c26a7fc5789765ccce9307d2803e0a0999"
    assert b.key == "e0a7df63e04bd9dbe3048bb82c59dab07719a3ebbdc8aa1967df5a42eac0c6c6"


_TEXT = st.text(st.characters(blacklist_categories=("Cs",)), max_size=40)


@settings(max_examples=300, deadline=None)
@given(
    prompt=_TEXT,
    model=_TEXT,
    temperature=st.one_of(st.floats(allow_nan=False, allow_infinity=False), st.integers(0, 2)),
    max_tokens=st.integers(-(2**70), 2**70),
    seed=st.one_of(st.none(), st.integers(-(2**40), 2**40)),
    stop=st.lists(_TEXT, max_size=3).map(tuple),
)
def test_canonical_is_what_the_json_encoder_writes(
    prompt, model, temperature, max_tokens, seed, stop
):
    r = GenRequest("gemini", model, prompt, temperature, max_tokens, seed, 1, stop)
    d = {**r.__dict__, "stop": list(stop), "temperature": float(temperature)}
    d.pop("_key", None)
    want = json.dumps(d, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    assert r.canonical() == want
    assert GenRequest.from_canonical(want).key == r.key


_JSON_VALUE = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | _TEXT,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(_TEXT, inner, max_size=3),
    max_leaves=6,
)


@settings(max_examples=300, deadline=None)
@given(
    eid=_TEXT,
    question=_TEXT,
    answer=_TEXT,
    choices=st.lists(st.tuples(_TEXT, _TEXT), max_size=3).map(tuple),
    meta=st.dictionaries(_TEXT, _JSON_VALUE, max_size=3),
)
def test_example_json_line_is_what_the_json_encoder_writes(eid, question, answer, choices, meta):
    """examples.jsonl's lines are hashed to check a resumed run's input: byte-identical."""
    ex = Example(eid, question, answer, choices, meta)
    assert ex.json_line() == json.dumps(ex.to_json(), ensure_ascii=False, sort_keys=True)
    odd = Example(eid, question, 7, choices, meta)  # type: ignore[arg-type]
    assert odd.json_line() == json.dumps(odd.to_json(), ensure_ascii=False, sort_keys=True)


def test_cache_hits_failures_and_wal(tmp_path):
    path = tmp_path / "c.sqlite"
    with Cache(path) as c:
        r1, r2 = _req(k=0), _req(k=1)
        c.put(r1, GenResponse("because", "stop", 3, 1))
        c.put_failure(r2, "TransientError", 503, "boom")
        assert c.get(r1.key).text == "because"
        assert c.get(r2.key) is None and r2.key not in c  # failures are never hits
        assert c.failure_count() == 1 and len(c) == 1
        c.put(r2, GenResponse("later", "length", 3, 9))  # a later success is a hit
        assert c.get(r2.key).truncated
    db = sqlite3.connect(path)
    assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert json.loads(db.execute("SELECT request FROM requests LIMIT 1").fetchone()[0])["model"]


# The schema-1 layout (until this version): the request text beside each response.
_SCHEMA_1 = """
CREATE TABLE meta (k TEXT PRIMARY KEY, v TEXT NOT NULL);
INSERT INTO meta VALUES ('schema', '1');
CREATE TABLE responses (
    key TEXT PRIMARY KEY, request TEXT NOT NULL, response TEXT NOT NULL, created REAL NOT NULL
) WITHOUT ROWID;
CREATE TABLE failures (
    id INTEGER PRIMARY KEY, key TEXT NOT NULL, request TEXT NOT NULL, error TEXT NOT NULL,
    status INTEGER, message TEXT NOT NULL, created REAL NOT NULL
);
"""


def _schema_1_cache(path: Path, reqs: list[GenRequest]) -> None:
    db = sqlite3.connect(path)
    db.executescript(_SCHEMA_1)
    db.executemany(
        "INSERT INTO responses VALUES (?, ?, ?, 1.0)",
        [(r.key, r.canonical(), GenResponse(f"old {r.sample_index}").to_json()) for r in reqs],
    )
    db.execute("INSERT INTO failures VALUES (1, 'k', '{}', 'TransientError', 503, 'boom', 1.0)")
    db.commit()
    db.close()


def test_a_schema_1_cache_still_hits_and_is_migrated_once(tmp_path):
    path, reqs = tmp_path / "old.sqlite", [_req(k=k) for k in range(3)]
    _schema_1_cache(path, reqs)
    with Cache(path, readonly=True) as c:  # a reader reads it as it is, changing nothing
        assert c.get(reqs[1].key).text == "old 1"
        assert sorted(q.key for q, _ in c.items()) == sorted(r.key for r in reqs)
    assert sqlite3.connect(path).execute("SELECT v FROM meta").fetchone()[0] == "1"
    with Cache(path) as c:  # a writer migrates it: every response hits, with its request
        assert {r.key: c.get(r.key).text for r in reqs} == {
            r.key: f"old {r.sample_index}" for r in reqs
        }
        assert {q.key: s.text for q, s in c.items()} == {
            r.key: f"old {r.sample_index}" for r in reqs
        }
        assert c.failure_count() == 1
        c.put(_req(k=9), GenResponse("new"))
        assert len(c) == 4
    db = sqlite3.connect(path)
    assert db.execute("SELECT v FROM meta").fetchone()[0] == "2"
    assert "request" not in {r[1] for r in db.execute("PRAGMA table_info(responses)")}
    with Cache(path) as c:  # opened again: nothing left to migrate
        assert c.get(_req(k=9).key).text == "new" and len(c) == 4


def test_a_writer_waits_for_another_process_migrating_the_cache(tmp_path, monkeypatch):
    """A large migration holds the write lock for minutes: a second run opening the cache then
    waits for it (past the usual lock timeout, shortened here) instead of failing."""
    monkeypatch.setattr(cache_mod, "BUSY_TIMEOUT_S", 0.2)
    path, reqs = tmp_path / "old.sqlite", [_req(k=k) for k in range(3)]
    _schema_1_cache(path, reqs)
    migrating = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    migrating.execute("PRAGMA journal_mode=WAL")
    migrating.execute("BEGIN IMMEDIATE")  # the other process, mid-migration
    threading.Timer(1.5, migrating.execute, ("COMMIT",)).start()
    t = time.monotonic()
    with Cache(path) as c:
        assert time.monotonic() - t >= 1.0
        assert {r.key: c.get(r.key).text for r in reqs} == {
            r.key: f"old {r.sample_index}" for r in reqs
        }
    assert sqlite3.connect(path).execute("SELECT v FROM meta").fetchone()[0] == "2"
    migrating.close()


def test_token_bucket_holds_the_rate():
    async def go() -> float:
        b = TokenBucket(rate=200.0, capacity=200.0 * 0.1)
        t = time.monotonic()
        for _ in range(60):
            await b.take()
        return time.monotonic() - t

    elapsed = asyncio.run(go())
    assert 59 / 200 * 0.9 <= elapsed <= 59 / 200 + 0.25  # starts with one token, no burst


@pytest.mark.parametrize("rpm", [30, 1200, 6000])
def test_no_minute_window_passes_the_rpm_limit(monkeypatch, rpm):
    """On a simulated clock whose event loop wakes up to 3 ms late (the bucket then holds
    tokens, and bursts), no sliding 60 s window sees more than --rpm grants, and the rate
    stays >= 98% of the limit."""
    import random

    from scicot_jax.teacher import limiter as limiter_mod

    clock, rng = [1000.0], random.Random(0)

    async def late_sleep(seconds: float) -> None:
        clock[0] += max(0.0, seconds) + rng.uniform(0.0, 0.003)

    monkeypatch.setattr(limiter_mod.time, "monotonic", lambda: clock[0])
    monkeypatch.setattr(limiter_mod.asyncio, "sleep", late_sleep)

    async def grants() -> list[float]:
        lim, out = Limiter(Limits(requests_per_minute=rpm, max_concurrency=4)), []
        for _ in range(int(rpm * 2.5)):  # two and a half minutes
            await lim.acquire(10)
            out.append(clock[0])
            await lim.release(10, 10)
            if rng.random() < 2 / rpm:  # twice a minute the loop is busy elsewhere a while
                clock[0] += rng.uniform(0.0, 0.5)
        return out

    times = asyncio.run(grants())
    j = busiest = 0
    for i, t in enumerate(times):
        while times[j] <= t - 60.0:
            j += 1
        busiest = max(busiest, i - j + 1)
    assert busiest <= rpm
    assert (len(times) - 1) / (times[-1] - times[0]) >= 0.98 * rpm / 60


def test_aimd_halves_once_per_congestion_event_and_grows_back():
    async def go() -> None:
        c = AdaptiveConcurrency(16)
        old = await c.acquire()
        await c.release()
        assert c.on_throttle(old) and c.limit == 8
        assert not c.on_throttle(old)  # a request sent before the cut: same event
        new = await c.acquire()
        await c.release()
        assert c.on_throttle(new) and c.limit == 4
        for _ in range(200):
            c.on_success()
        assert c.limit == 16

    asyncio.run(go())


def test_limiter_global_pause_blocks_everyone():
    async def go() -> float:
        lim = Limiter(Limits(max_concurrency=4))
        lim.pause(0.3)
        t = time.monotonic()
        granted = await lim.acquire(10)
        await lim.release(10, 5)
        assert granted >= t
        return time.monotonic() - t

    assert asyncio.run(go()) >= 0.29


def test_retry_hints():
    assert parse_retry_after({"retry-after": "2"}) == 2.0
    assert parse_retry_after({"retry-after-ms": "250", "retry-after": "9"}) == 0.25
    date = time.strftime("%a, %d %b %Y %H:%M:%S GMT", time.gmtime(time.time() + 30))
    assert 25 <= parse_retry_after({"retry-after": date}) <= 31
    assert parse_retry_after({}) is None
    assert parse_duration("13s") == 13 and parse_duration("1m30s") == 90
    assert parse_duration("250ms") == 0.25
    body = {
        "error": {
            "code": 429,
            "details": [
                {
                    "@type": "type.googleapis.com/google.rpc.QuotaFailure",
                    "violations": [{"quotaId": "GenerateRequestsPerMinutePerProjectPerModel"}],
                },
                {"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": "7s"},
            ],
        }
    }
    assert gemini_error_details(body) == (7.0, False)
    body["error"]["details"][0]["violations"][0]["quotaId"] = "GenerateRequestsPerDay-FreeTier"
    assert gemini_error_details(body)[1] is True
    assert normalise_base_url("http://h:1", "openai") == "http://h:1/v1"
    assert normalise_base_url("http://h:1/v1/", "openai") == "http://h:1/v1"
    assert normalise_base_url("http://h:1/", "gemini") == "http://h:1"


def test_prompts_match_fine_tune_cot_and_parse_back():
    ex = Example("1", "How many apples?", "3")
    s1 = prompts.zero_shot_step1(ex)
    assert s1 == "Q: How many apples?\nA: Let's think step by step."
    s2 = prompts.zero_shot_step2(s1, " 1 + 2 = 3.")
    assert s2 == s1 + " 1 + 2 = 3.\nTherefore, the answer is"
    assert prompts.parse_prompt(s1) == prompts.ParsedPrompt("reasoning", "How many apples?", ())
    p2 = prompts.parse_prompt(s2)
    assert p2.kind == "answer" and "1 + 2 = 3." in p2.reasoning
    mc = Example("2", "Pick one.", "B", (("A", "red"), ("B", "blue apple")))
    cond = prompts.answer_conditioned(mc)
    assert "Correct answer: (B) blue apple" in cond and cond.endswith("step by step.")
    pc = prompts.parse_prompt(cond)
    assert (pc.kind, pc.question, pc.choices) == ("conditioned", "Pick one.", mc.choices)
    shots = (prompts.Exemplar("What is 1+1?", "1 plus 1 is 2.", "2"),)
    fs = prompts.few_shot(ex, shots)
    assert "Therefore, the answer is 2." in fs and fs.endswith("Q: How many apples?\nA:")
    assert prompts.parse_prompt(fs).kind == "few_shot"
    assert prompts.parse_prompt(fs).question == "How many apples?"


def test_seeds_differ_per_sample_and_are_stable():
    seeds = {derive_seed(0, "q1", k) for k in range(64)}
    assert len(seeds) == 64 and derive_seed(0, "q1", 3) == derive_seed(0, "q1", 3)
    assert derive_seed(1, "q1", 3) != derive_seed(0, "q1", 3)


def test_bad_input_lines_are_reported_with_file_and_line(tmp_path):
    f = tmp_path / "in.jsonl"
    good = {"id": "a", "question": "Q?", "answer": "1"}
    f.write_text(
        "\n".join(
            [
                json.dumps(good),
                "{not json",
                json.dumps({"id": "b", "answer": "2"}),
                "",
                json.dumps({"id": "c", "question": "Q?", "answer": "Z", "choices": ["x", "y"]}),
                json.dumps({"id": "d", "question": "Q?", "answer": "y", "choices": ["x", "y"]}),
            ]
        )
        + "\n"
    )
    with pytest.raises(InputError) as e:
        validate_jsonl(f)
    msg = str(e.value)
    assert f"{f}:2: invalid JSON" in msg
    assert f"{f}:3: field 'question'" in msg
    assert f"{f}:5: field 'choices'" in msg
    assert f"{f}:1" not in msg and f"{f}:6" not in msg
    ok = tmp_path / "ok.jsonl"
    ok.write_text(
        json.dumps(good)
        + "\n"
        + json.dumps({"id": 7, "question": "Pick", "answer": "y", "choices": ["x", "y"]})
        + "\n"
    )
    exs = list(jsonl_source(ok)())
    assert exs[1].id == "7" and exs[1].answer == "B" and exs[1].choices[1] == ("B", "y")


def test_input_lines_are_checked_against_the_card(tmp_path):
    from scicot_jax.data.cards import load_card

    f = tmp_path / "in.jsonl"
    f.write_text(
        json.dumps({"id": "a", "question": "Which?", "answer": "B"})
        + "\n"
        + json.dumps({"id": "b", "question": "How many?", "answer": "many"})
        + "\n"
    )
    with pytest.raises(InputError) as e:
        validate_jsonl(f, load_card("synthetic_mc"))
    assert f"{f}:1: field 'choices' missing" in str(e.value)
    with pytest.raises(InputError) as e:
        validate_jsonl(f, load_card("synthetic_arithmetic"))
    assert f"{f}:1: field 'answer'" in str(e.value) and f"{f}:2: field 'answer'" in str(e.value)
    # Fine-tune-CoT's multiple-choice tasks carry their choices inside the question text.
    assert validate_jsonl(f, load_card("ftcot_aqua")) == 2


def test_prices():
    assert price_for("gemini-2.5-flash-lite").input_per_m == 0.10
    assert price_for("models/gemini-2.5-flash").output_per_m == 2.5
    p = price_for("my-local-llama")
    assert not p.known and p.cost(10**6, 10**6) == 0
    assert price_for("my-local-llama", 1.0, 2.0).cost(10**6, 10**6) == 3.0


def test_exemplar_choices_and_errors(tmp_path):
    f = tmp_path / "shots.jsonl"
    base = {"question": "Pick", "rationale": "Because.", "answer": "B"}
    for choices in ({"A": "x", "B": "y"}, ["x", "y"], [["A", "x"], ["B", "y"]]):
        f.write_text(json.dumps({**base, "choices": choices}) + "\n")
        assert prompts.load_exemplars(f)[0].choices == (("A", "x"), ("B", "y"))
    f.write_text(json.dumps(base) + "\n\n" + json.dumps({**base, "choices": ["x"]}) + "\n")
    with pytest.raises(ValueError, match=rf"{f}:3: field 'choices'"):
        prompts.load_exemplars(f)
    f.write_text("[1]\n")
    with pytest.raises(ValueError, match=rf"{f}:1: expected a JSON object"):
        prompts.load_exemplars(f)


def test_the_summary_counted_while_writing_is_the_one_read_from_the_store(tmp_path, monkeypatch):
    """A run from an empty store counts its summary as it writes records; a resumed run reads
    its store: both equal accuracy_summary over the store read afresh."""
    from scicot_jax.data.store import RationaleStore
    from scicot_jax.data.synthetic import generate
    from scicot_jax.teacher import report, run_teacher, start_oracle_server
    from scicot_jax.teacher.report import accuracy_summary
    from scicot_jax.teacher.runner import SUMMARY_SPILL

    monkeypatch.setattr(report, "_SPILL_AT", 7)  # marks go through the spill file

    exs = generate("arithmetic", "train", n=30)
    out = tmp_path / "run"
    opts = dict(card="synthetic_arithmetic", backend="openai", model="oracle", temperature=0.7)
    opts.update(prompt="zero_shot_cot", cache_path=str(tmp_path / "c.sqlite"), out_dir=str(out))
    with start_oracle_server(error_rate=0.4) as srv:
        first = run_teacher(exs, samples=2, base_url=srv.url, **opts)
        assert first == {**first, **accuracy_summary(RationaleStore.open(out))}
        more = run_teacher(exs, samples=3, base_url=srv.url, **opts)
        assert more == {**more, **accuracy_summary(RationaleStore.open(out))}
    assert first["records"] == 60 and more["records"] == 90 and more["jobs_skipped"] == 60
    assert 0 < first["correct"] < 60  # right and wrong answers: a histogram with spread
    assert len(first["kept_samples_per_question"]["histogram"]) == 3
    assert not (out / SUMMARY_SPILL).exists()
