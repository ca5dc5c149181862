"""Rationale store: atomic appends, crash repair, validation, exactly-once keys."""

import json
import multiprocessing as mp
import os

import pytest

from scicot_jax.data.store import RationaleRecord, RationaleStore, StoreError


def rec(eid: str, i: int = 0, **kw) -> RationaleRecord:
    base = dict(
        example_id=eid,
        sample_index=i,
        rationale=f"step for {eid} \u2713",
        answer="B",
        correct=True,
        source="teacher:oracle",
        prompt_kind="zero_shot_cot",
        temperature=0.7,
    )
    return RationaleRecord(**{**base, **kw})


def test_create_append_reopen(tmp_path):
    run = tmp_path / "run"
    store = RationaleStore.create(run, {"teacher": "oracle", "temperature": 0.7})
    store.append(rec("a"))
    store.extend([rec("a", 1), rec("b", 0, correct=None, answer=None, extra={"x": [1]})])
    assert len(store) == 3 and ("a", 1) in store
    store.close()
    again = RationaleStore.open(run)
    assert again.keys() == {("a", 0), ("a", 1), ("b", 0)}
    assert [r.to_json() for r in again.records()] == [
        rec("a").to_json(),
        rec("a", 1).to_json(),
        rec("b", 0, correct=None, answer=None, extra={"x": [1]}).to_json(),
    ]
    assert again.manifest["teacher"] == "oracle" and again.manifest["format"]
    assert list(again.by_example())[0] == "a"
    with pytest.raises(FileExistsError):
        RationaleStore.create(run, {})
    assert RationaleStore.create(run, {}, exist_ok=True).keys() == again.keys()


def test_duplicate_append_rejected(tmp_path):
    store = RationaleStore.create(tmp_path, {})
    store.append(rec("a"))
    with pytest.raises(KeyError, match="already stored"):
        store.append(rec("a"))
    with pytest.raises(KeyError):
        store.extend([rec("c"), rec("c")])
    assert len(store) == 1


def test_manifest_update_is_atomic(tmp_path):
    store = RationaleStore.create(tmp_path, {"d": 1})
    store.update_manifest(d=4, done=True)
    assert json.loads((tmp_path / "manifest.json").read_text())["d"] == 4
    assert RationaleStore.open(tmp_path).manifest["done"] is True
    assert not [p for p in os.listdir(tmp_path) if ".tmp." in p]


def test_truncated_last_line_is_moved_aside(tmp_path):
    store = RationaleStore.create(tmp_path, {})
    store.extend([rec("a"), rec("b")])
    store.close()
    path = tmp_path / "records.jsonl"
    whole = path.read_bytes()
    cut = json.dumps(rec("c").to_json())[:25].encode()
    path.write_bytes(whole + cut)
    with pytest.warns(UserWarning, match=r"records.jsonl:3: truncated last line"):
        again = RationaleStore.open(tmp_path)
    assert again.keys() == {("a", 0), ("b", 0)}
    assert path.read_bytes() == whole
    assert (tmp_path / "records.jsonl.corrupt").read_bytes() == cut + b"\n"
    again.append(rec("c"))  # appends continue cleanly after repair
    assert len(list(RationaleStore.open(tmp_path).records())) == 3


def test_whole_record_missing_newline_is_kept(tmp_path):
    RationaleStore.create(tmp_path, {}).close()
    path = tmp_path / "records.jsonl"
    path.write_bytes(json.dumps(rec("a").to_json()).encode())
    with pytest.warns(UserWarning, match="lacked its newline"):
        assert RationaleStore.open(tmp_path).keys() == {("a", 0)}
    assert path.read_bytes().endswith(b"\n")


def test_corrupt_line_mid_file_raises_with_location(tmp_path):
    store = RationaleStore.create(tmp_path, {})
    store.extend([rec("a"), rec("b")])
    store.close()
    path = tmp_path / "records.jsonl"
    lines = path.read_text().splitlines(keepends=True)
    path.write_text(lines[0] + "{not json\n" + lines[1])
    with pytest.raises(StoreError, match=r"records.jsonl:2: invalid JSON"):
        RationaleStore.open(tmp_path)
    bad = dict(rec("x").to_json(), correct="yes")
    path.write_text(lines[0] + json.dumps(bad) + "\n" + lines[1])
    with pytest.raises(StoreError, match=r"records.jsonl:2: field 'correct'"):
        RationaleStore.open(tmp_path)
    missing = {k: v for k, v in rec("x").to_json().items() if k != "rationale"}
    path.write_text(json.dumps(missing) + "\n" + lines[1])
    with pytest.raises(StoreError, match=r"records.jsonl:1: missing field 'rationale'"):
        RationaleStore.open(tmp_path)
    path.write_text(lines[0] + lines[1] + lines[0])
    with pytest.raises(StoreError, match=r"records.jsonl:3: duplicate record"):
        RationaleStore.open(tmp_path)


def test_invalid_record_rejected_on_append(tmp_path):
    store = RationaleStore.create(tmp_path, {})
    with pytest.raises(StoreError, match="sample_index"):
        store.append(rec("a", sample_index=True))
    assert (tmp_path / "records.jsonl").read_bytes() == b""


class _Dict(dict):
    """A dict that from_json checks field by field (its one-pass check takes only dict)."""


_GOOD = rec("e").to_json()
_VALUES = (None, True, False, -1, 0, 2, 0.5, float("inf"), "", "x", {}, {"a": 1}, [], [1])
_CASES = [{**_GOOD, name: v} for name in [*_GOOD, "other"] for v in _VALUES]
_CASES += [{k: v for k, v in _GOOD.items() if k != name} for name in _GOOD] + [_GOOD, []]


@pytest.mark.parametrize("d", _CASES)
def test_the_one_pass_record_check_agrees_with_the_field_by_field_one(d):
    results = []
    for form in (d, _Dict(d) if isinstance(d, dict) else d):
        try:
            results.append(RationaleRecord.from_json(form))
        except StoreError as e:
            results.append(str(e))
    assert results[0] == results[1]


def _hold_lock(run_dir, ready, release):
    store = RationaleStore.open(run_dir)
    store.append(rec("child"))
    ready.set()
    release.wait(10)
    store.close()


def test_second_writer_process_refused(tmp_path):
    RationaleStore.create(tmp_path, {}).close()
    ctx = mp.get_context("fork")
    ready, release = ctx.Event(), ctx.Event()
    child = ctx.Process(target=_hold_lock, args=(tmp_path, ready, release))
    child.start()
    try:
        assert ready.wait(10)
        reader = RationaleStore.open(tmp_path)  # readers are fine
        assert ("child", 0) in reader
        with pytest.raises(RuntimeError, match="another process"):
            reader.append(rec("parent"))
    finally:
        release.set()
        child.join(10)


def test_examples_roundtrip_plain_dicts(tmp_path):
    store = RationaleStore.create(tmp_path, {})
    assert store.examples() == []
    n = store.write_examples([{"id": "a", "question": "q?", "answer": "1"}])
    assert n == 1 and (tmp_path / "examples.jsonl").read_text().count("\n") == 1


def test_unknown_temperature_allowed(tmp_path):
    store = RationaleStore.create(tmp_path, {})
    store.append(rec("a", temperature=None))
    assert next(RationaleStore.open(tmp_path).records()).temperature is None


def test_key_index_sorts_its_tail_and_answers_exactly(monkeypatch):
    from scicot_jax.data import key_index

    monkeypatch.setattr(key_index, "_MAX_TAIL", 8)
    index = key_index.KeyIndex()
    for i in range(1000):
        index.add_hash(key_index.key_hash(f"q{i}", i % 3))
    assert index._sorted > 900 and len(index) == 1000  # the tail was merged (sorted) repeatedly
    assert all((f"q{i}", i % 3) in index for i in range(1000))
    assert not any((f"q{i}", 3) in index for i in range(1000))
    assert index.nbytes() < 1000 * 8 * 1.2  # 8 bytes per key


def test_hash_collisions_are_told_apart(tmp_path, monkeypatch):
    from scicot_jax.data import key_index
    from scicot_jax.data import store as store_mod

    def poor(eid, k):
        return len(eid)  # every id of one length collides

    monkeypatch.setattr(key_index, "key_hash", poor)
    monkeypatch.setattr(store_mod, "key_hash", poor)
    store = RationaleStore.create(tmp_path, {})
    store.extend([rec("a"), rec("b")])
    store.append(rec("c"))
    assert ("a", 0) in store and ("c", 0) in store and ("d", 0) not in store
    with pytest.raises(KeyError, match="already stored"):
        store.append(rec("b"))
    store.close()
    again = RationaleStore.open(tmp_path)
    assert ("b", 0) in again and ("e", 0) not in again and len(again) == 3
    path = tmp_path / "records.jsonl"
    path.write_text(path.read_text() + path.read_text().splitlines(keepends=True)[1])
    with pytest.raises(StoreError, match=r"records.jsonl:4: duplicate record.*'b'"):
        RationaleStore.open(tmp_path)


def test_accuracy_summary_histogram_of_kept_samples(tmp_path):
    from scicot_jax.teacher.report import accuracy_summary

    store = RationaleStore.create(tmp_path, {"examples": {"count": 4}})
    store.extend(
        [
            rec("a", 0, correct=True),
            rec("b", 0, correct=False),
            rec("c", 1, correct=True),
            rec("a", 1, correct=False),
            rec("c", 0, correct=True),
        ]
    )
    kept = accuracy_summary(store)["kept_samples_per_question"]
    # a: 1 kept, b: 0, c: 2, d (no record yet): 0
    assert kept == {"mean": 0.75, "questions_with_none": 2, "histogram": {"0": 2, "1": 1, "2": 1}}


def test_kept_histogram_is_the_same_in_any_chunking():
    import random
    from array import array
    from collections import Counter

    from scicot_jax.teacher.report import _MASK, _kept_per_question

    for trial in range(50):
        rng = random.Random(trial)
        recs = [(rng.randrange(1, 40), rng.random() < 0.5) for _ in range(rng.randrange(300))]
        per, questions = Counter(), {q for q, _ in recs}
        for q, ok in recs:
            per[q] += ok
        marks = array("Q", [((q * 7919 << 1) & _MASK) | ok for q, ok in recs])
        got = _kept_per_question(marks, chunk=rng.choice([1, 2, 3, 7, 64, 1024]))
        assert got == (len(questions), Counter(per[q] for q in questions))
