"""Fuzzing the files users hand us: --input JSONL, task cards, review files, rationale stores,
and the --gin.KEY=VALUE bindings of the train binary.

Thousands of generated malformed inputs (hypothesis, derandomized): each is accepted, or refused
with an error of the module's own type that names the file (and the line, where there is one);
no other exception escapes, and a refused file leaves every file on disk as it was.
"""

from __future__ import annotations

import json
import re
import shutil
import tomllib
from collections import Counter
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from scicot_jax.data.cards import CARDS_DIR, CardError, load_card
from scicot_jax.data.store import RationaleRecord, RationaleStore, StoreError
from scicot_jax.teacher.inputs import InputError, jsonl_source, validate_jsonl
from scicot_jax.teacher.review import ReviewError, apply_review

CASES: Counter[str] = Counter()  # cases tried per file kind (printed by each test)


def _settings(n: int):
    return settings(
        max_examples=n,
        deadline=None,
        derandomize=True,
        database=None,
        suppress_health_check=list(HealthCheck),
    )


# -- generators -------------------------------------------------------------------------
_scalar = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**70), 2**70),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=12),
)
_json = st.recursive(
    _scalar,
    lambda c: st.lists(c, max_size=3) | st.dictionaries(st.text(max_size=6), c, max_size=3),
    max_leaves=6,
)
_bad_bytes = st.sampled_from(
    [b"\xff\xfe", b"\xe9", b"\x00", b"{", b"}", b"[", b'"', b"\\", b"\r", b"NaN", b"1e999"]
)


def _record_like(fields: dict[str, st.SearchStrategy]) -> st.SearchStrategy[dict]:
    """Objects with the right keys holding right or wrong values, plus stray keys."""
    return st.fixed_dictionaries(
        {},
        optional={k: st.one_of(v, _json) for k, v in fields.items()}
        | {"zz_" + k: _json for k in list(fields)[:1]},
    )


def _line(obj: st.SearchStrategy[dict], valid=None) -> st.SearchStrategy[bytes]:
    """One JSONL line: often a valid object, else a wrong-typed one, any JSON value, a damaged
    or cut line, or raw bytes."""
    as_json = obj.map(lambda d: json.dumps(d, ensure_ascii=False).encode())
    good = (
        as_json
        if valid is None
        else valid.map(lambda d: json.dumps(d, ensure_ascii=False).encode())
    )
    bad = st.one_of(
        as_json,
        _json.map(lambda v: json.dumps(v).encode()),
        st.tuples(as_json, st.integers(0, 40)).map(lambda t: t[0][: t[1]]),  # cut short
        st.tuples(as_json, _bad_bytes, st.integers(0, 40)).map(
            lambda t: t[0][: t[2]] + t[1] + t[0][t[2] :]
        ),  # a byte spliced in
        st.binary(max_size=30),
    )
    # Three lines in four valid: a file is often accepted, and a bad line sits among good ones.
    return st.sampled_from([False, True, True, True]).flatmap(lambda ok: good if ok else bad)


def _jsonl(obj: st.SearchStrategy[dict], valid=None) -> st.SearchStrategy[bytes]:
    return st.tuples(st.lists(_line(obj, valid), max_size=5), st.booleans()).map(
        lambda t: b"\n".join(_unique_ids(t[0])) + (b"\n" if t[1] else b"")
    )


def _unique_ids(lines: list[bytes]) -> list[bytes]:
    """Valid lines get distinct ids (hypothesis likes repeating a value): their place-holder
    becomes the line number."""
    return [line.replace(_ID.encode(), f"id{i}".encode()) for i, line in enumerate(lines)]


_ID = "@ID@"
_ids = st.just(_ID)
_words = st.text("abcdefgh ?", min_size=1, max_size=30).filter(str.strip)
_VALID_INPUT = {
    "synthetic_mc": st.fixed_dictionaries(
        {
            "id": _ids,
            "question": _words,
            "answer": st.sampled_from("ABC"),
            "choices": st.just([["A", "one"], ["B", "two"], ["C", "three"]]),
        }
    ),
    "synthetic_arithmetic": st.fixed_dictionaries(
        {"id": _ids, "question": _words, "answer": st.integers(-99, 99).map(str)}
    ),
    "synthetic_coin_flip": st.fixed_dictionaries(
        {"id": _ids, "question": _words, "answer": st.sampled_from(["yes", "no", "Yes"])}
    ),
}
_VALID_REVIEW = st.one_of(
    st.integers(0, 2).map(
        lambda i: {
            "example_id": f"e{i}",
            "sample_index": 0,
            "decision": "keep",
            "rationale": f"r{i}",
        }
    ),
    st.integers(0, 2).map(
        lambda i: {"example_id": f"e{i}", "sample_index": 0, "decision": "drop", "rationale": ""}
    ),
    st.tuples(st.integers(0, 2), _words).map(
        lambda t: {
            "example_id": f"e{t[0]}",
            "sample_index": 0,
            "decision": "edit",
            "rationale": t[1],
        }
    ),
)
_VALID_STORE = st.fixed_dictionaries(
    {
        "example_id": _ids,
        "sample_index": st.integers(0, 3),
        "rationale": _words,
        "answer": st.one_of(st.none(), st.just("1")),
        "correct": st.one_of(st.none(), st.booleans()),
        "source": st.just("teacher:x"),
        "prompt_kind": st.just("zero_shot_cot"),
        "temperature": st.one_of(st.none(), st.floats(0, 2)),
    }
)


_input_record = _record_like(
    {
        "id": st.one_of(st.text(max_size=8), st.integers()),
        "question": st.text(max_size=40),
        "answer": st.one_of(st.sampled_from(["A", "B", "yes", "no", "7", "maybe"]), st.text()),
        "choices": st.one_of(
            st.lists(st.tuples(st.sampled_from("ABCD"), st.text(max_size=5)), max_size=4),
            st.dictionaries(st.sampled_from(["label", "text"]), st.lists(st.text(max_size=4))),
        ),
        "meta": _json,
    }
)
_review_record = _record_like(
    {
        "example_id": st.sampled_from(["e0", "e1", "e2", "zz"]),
        "sample_index": st.integers(-1, 2),
        "decision": st.sampled_from(["keep", "drop", "edit", "maybe"]),
        "rationale": st.sampled_from(["r0", "r1", "", "new reasoning. The answer is 1."]),
    }
)
_store_record = _record_like(
    {
        "example_id": st.sampled_from(["e0", "e1", "e2"]),
        "sample_index": st.integers(-1, 2),
        "rationale": st.text(max_size=10),
        "answer": st.one_of(st.none(), st.text(max_size=3)),
        "correct": st.one_of(st.none(), st.booleans()),
        "source": st.just("teacher:x"),
        "prompt_kind": st.just("zero_shot_cot"),
        "temperature": st.one_of(st.none(), st.floats(0, 2)),
        "split": st.sampled_from(["train", "test"]),
        "extra": st.dictionaries(st.text(max_size=3), _scalar, max_size=2),
    }
)


def _named(msg: str, path: Path, line: bool) -> bool:
    """The error names the file, and with `line` also a line number."""
    return re.search(re.escape(str(path)) + (r":\d+" if line else ""), msg) is not None


def _tree(root: Path) -> dict[str, bytes]:
    """Every file's bytes (empty lock files, made by any reader that checks for a writer, aside)."""
    return {
        str(p.relative_to(root)): p.read_bytes()
        for p in root.rglob("*")
        if p.is_file() and not p.name.endswith(".lock")
    }


# -- input JSONL ---------------------------------------------------------------------------
def test_fuzz_input_jsonl(tmp_path):
    path = tmp_path / "in.jsonl"
    cards = [load_card(n) for n in _VALID_INPUT]

    @_settings(1200)
    @given(card=st.sampled_from(cards), lines=st.data())
    def case(card, lines) -> None:
        data = lines.draw(_jsonl(_input_record, _VALID_INPUT[card.name]))
        CASES["input"] += 1
        path.write_bytes(data)
        try:
            n = validate_jsonl(path, card)
        except InputError as e:
            assert _named(str(e), path, line="no examples" not in str(e)), str(e)
            CASES["input refused"] += 1
        else:
            assert len(list(jsonl_source(path, None, card)())) == n > 0

    case()
    print(f"input JSONL: {CASES['input']} cases, {CASES['input refused']} refused")


# -- task cards ------------------------------------------------------------------------------
def _toml_value(v) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int | float):
        return repr(v)
    if isinstance(v, str):
        return json.dumps(v)
    if isinstance(v, list):
        return "[" + ", ".join(_toml_value(x) for x in v) + "]"
    if isinstance(v, dict):
        return "{" + ", ".join(f"{json.dumps(k)} = {_toml_value(x)}" for k, x in v.items()) + "}"
    return '""'


def _toml(card: dict) -> str:
    top = [
        f"{json.dumps(k)} = {_toml_value(v)}" for k, v in card.items() if not isinstance(v, dict)
    ]
    tables = [
        f"[{json.dumps(k)}]\n"
        + "\n".join(f"{json.dumps(a)} = {_toml_value(b)}" for a, b in v.items())
        for k, v in card.items()
        if isinstance(v, dict)
    ]
    return "\n".join(top) + "\n\n" + "\n\n".join(tables) + "\n"


_CARD_BASES = [
    tomllib.loads((CARDS_DIR / f"{n}.toml").read_text())
    for n in ("synthetic_arithmetic", "arc_easy", "ftcot_addsub")
]
_toml_scalar = st.one_of(
    st.booleans(), st.integers(-5, 10**6), st.text(max_size=8), st.sampled_from(["train", "x["])
)


@st.composite
def _card_text(draw) -> bytes:
    card = json.loads(json.dumps(draw(st.sampled_from(_CARD_BASES))))
    for _ in range(draw(st.sampled_from([0, 1, 1, 2, 3]))):
        table = draw(st.sampled_from([None, *[k for k, v in card.items() if isinstance(v, dict)]]))
        target = card if table is None else card[table]
        op = draw(st.sampled_from(["drop", "set", "add", "retype"]))
        keys = list(target)
        if op == "drop" and keys:
            target.pop(draw(st.sampled_from(keys)))
        elif op == "set" and keys:
            target[draw(st.sampled_from(keys))] = draw(_toml_scalar)
        elif op == "add":
            target[draw(st.text("abcdefghijklmnopqrstuvwxyz_", min_size=1, max_size=10))] = draw(
                _toml_scalar
            )
        elif op == "retype" and keys:
            k = draw(st.sampled_from(keys))
            target[k] = [target[k]] if not isinstance(target[k], dict) else draw(_toml_scalar)
    text = _toml(card).encode()
    if draw(st.integers(0, 5)) == 0:  # damage the TOML itself
        i = draw(st.integers(0, len(text)))
        text = text[:i] + draw(_bad_bytes) + text[i:]
    return text


def test_fuzz_task_cards(tmp_path):
    path = tmp_path / "card.toml"

    @_settings(800)
    @given(text=_card_text())
    def case(text: bytes) -> None:
        CASES["card"] += 1
        path.write_bytes(text)
        try:
            load_card(path)
        except CardError as e:
            assert _named(str(e), path, line=False), str(e)
            CASES["card refused"] += 1

    case()
    print(f"task cards: {CASES['card']} cases, {CASES['card refused']} refused")


# -- review files ------------------------------------------------------------------------------
def _small_run(run: Path) -> None:
    store = RationaleStore.create(run, {"task": "t", "answer_type": "number", "compat": None})
    store.extend(
        RationaleRecord(f"e{i}", 0, f"r{i}", str(i), i % 2 == 0, "teacher:x", "zero_shot_cot", 0.0)
        for i in range(3)
    )
    store.close()


def test_fuzz_review_files(tmp_path):
    run, review, out = tmp_path / "run", tmp_path / "review.jsonl", tmp_path / "reviewed"
    _small_run(run)
    before = _tree(run)

    @_settings(600)
    @given(
        data=_jsonl(_review_record, _VALID_REVIEW),
        missing=st.sampled_from(["error", "keep", "drop"]),
    )
    def case(data: bytes, missing: str) -> None:
        CASES["review"] += 1
        review.write_bytes(data)
        shutil.rmtree(out, ignore_errors=True)
        try:
            apply_review(run, review, out, missing)
        except ReviewError as e:
            assert _named(str(e), review, line="no decision for" not in str(e)), str(e)
            assert not out.exists()  # nothing written
            CASES["review refused"] += 1
        assert _tree(run) == before  # the reviewed run is never touched

    case()
    print(f"review files: {CASES['review']} cases, {CASES['review refused']} refused")


# -- rationale stores ----------------------------------------------------------------------------
def test_fuzz_rationale_store(tmp_path):
    run = tmp_path / "run"
    manifest = json.dumps({"format": "scicot-rationales/1", "task": "t"}).encode()

    @_settings(1000)
    @given(
        records=_jsonl(_store_record, _VALID_STORE),
        man=st.one_of(st.just(manifest), st.just(manifest), _line(st.just({"task": "t"}))),
        examples=st.one_of(st.none(), st.none(), _jsonl(_input_record)),
    )
    def case(records: bytes, man: bytes, examples: bytes | None) -> None:
        CASES["store"] += 1
        shutil.rmtree(run, ignore_errors=True)
        run.mkdir()
        (run / "records.jsonl").write_bytes(records)
        (run / "manifest.json").write_bytes(man)
        if examples is not None:
            (run / "examples.jsonl").write_bytes(examples)
        files = _tree(run)
        before = files
        try:
            store = RationaleStore.open(run)  # may repair a crash-cut last line: accepted
            before = _tree(run)
            list(store.records())
            store.examples()
            store.close()
        except StoreError as e:
            msg = str(e)
            assert any(_named(msg, run / f, line=True) for f in files), msg
            assert _tree(run) == before  # a refused store is left as it was
            CASES["store refused"] += 1

    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # crash repair of a cut last line warns
        case()
    print(f"rationale stores: {CASES['store']} cases, {CASES['store refused']} refused")


# -- gin bindings (train binary) ----------------------------------------------------------
def _pos_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and v > 0


_GIN_ORACLE = {  # macro: which values the train binary can use
    "BATCH_SIZE": _pos_int,
    "CHECKPOINT_PERIOD": _pos_int,
    "TRAIN_STEPS": lambda v: isinstance(v, int) and not isinstance(v, bool) and v >= 0,
    "EVAL_PERIOD": lambda v: isinstance(v, int) and not isinstance(v, bool) and v >= 0,
    "LEARNING_RATE": lambda v: isinstance(v, int | float) and not isinstance(v, bool),
    "USE_HARDWARE_RNG": lambda v: isinstance(v, bool),
    "MODEL_DIR": lambda v: isinstance(v, str),
    "RANDOM_SEED": lambda v: v is None or (isinstance(v, int) and not isinstance(v, bool)),
    "TASK_FEATURE_LENGTHS": lambda v: (
        isinstance(v, dict) and all(isinstance(k, str) and _pos_int(x) for k, x in v.items())
    ),
}
_gin_literal = st.one_of(
    st.integers(-3, 2**40).map(str),
    st.floats(-10, 10, allow_nan=False).map(repr),
    st.sampled_from(["None", "True", "False", "'x'", "'eight'", "[]", "()", "{}", "1e3"]),
    st.dictionaries(
        st.sampled_from(["inputs", "targets", "x"]), st.integers(-2, 99), max_size=2
    ).map(repr),
    st.lists(st.integers(0, 9), max_size=3).map(repr),
    st.text(alphabet="()[]{}'\"=,:%@.ab1 \\#", max_size=8),  # mostly broken syntax
)


def test_fuzz_gin_bindings():
    """Each --gin.KEY=VALUE the CLI builds is accepted only when usable, else one named line."""
    import gin
    from scicot_jax.runtime import gin_checks, gin_utils
    from scicot_jax.train import cli

    @_settings(600)
    @given(key=st.sampled_from(sorted(_GIN_ORACLE)), text=_gin_literal)
    def check(key, text):
        CASES["gin"] += 1
        _, bindings = gin_utils.parse_args(["scicot-train", f"--gin.{key}={text}"], "fuzz")
        base = ["MODEL_DIR = '/tmp/x'", "MIXTURE_OR_TASK_NAME = 'scicot:x'"]
        try:
            gin_utils.parse_gin(["models/tiny.gin", "runs/finetune.gin"], [*base, *bindings])
            value = gin.query_parameter(f"{key}/macro.value")
            gin_checks.check_config(cli.run)
            accepted = True
        except gin_checks.GinValueError as e:
            msg, accepted = str(e), False
            CASES["gin refused"] += 1
            assert "\n" not in msg and "Traceback" not in msg
            if msg.startswith("gin binding"):
                assert repr(bindings[0]) in msg, msg  # unparsable: the binding is quoted
                return
            assert msg.startswith(key), msg  # a wrong value: named by the macro the user set
        finally:
            gin.clear_config()
        if not isinstance(value, gin.config.ConfigurableReference):  # %X / @f(): not judged
            assert accepted == _GIN_ORACLE[key](value), (key, text, value)

    check()
    print(f"gin bindings: {CASES['gin']} cases, {CASES['gin refused']} refused")
