"""Where a run's examples come from: an --input JSONL file, a task card, or Python objects."""

from __future__ import annotations

import hashlib
import json
from array import array
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

from scicot_jax.data.answers import normalize_number
from scicot_jax.data.examples import Example
from scicot_jax.data.key_index import sorted_duplicates
from scicot_jax.data.sources import mc_answer_label, parse_choices, read_examples
from scicot_jax.files import read_jsonl

ExampleSource = Callable[[], Iterator[Example]]  # re-iterable: called once per pass
MAX_REPORTED = 20
# Longer questions are refused: far past any model's context, and costly if sent anyway.
MAX_QUESTION_CHARS = 100_000


class InputError(ValueError):
    """Bad input records; the message lists them as file:line: problem."""


def _example(d: Any, where: str, card: Any = None) -> Example:
    if not isinstance(d, dict):
        raise ValueError(f"{where}: expected a JSON object, got {type(d).__name__}")
    if "id" not in d or not isinstance(d["id"], str | int) or str(d["id"]).strip() == "":
        raise ValueError(f"{where}: field 'id' missing or not a string/integer")
    q = d.get("question")
    if not isinstance(q, str) or not q.strip():
        raise ValueError(f"{where}: field 'question' missing or empty")
    if len(q) > MAX_QUESTION_CHARS:
        raise ValueError(
            f"{where}: field 'question' has {len(q):,} characters, more than {MAX_QUESTION_CHARS:,}"
        )
    ans = d.get("answer")
    if isinstance(ans, bool) or not isinstance(ans, str | int | float) or str(ans).strip() == "":
        raise ValueError(f"{where}: field 'answer' missing or empty")
    choices: tuple[tuple[str, str], ...] = ()
    if d.get("choices") not in (None, [], {}):
        try:
            choices = parse_choices(d["choices"])
            ans = mc_answer_label(ans, choices)
        except (ValueError, TypeError, json.JSONDecodeError) as e:
            raise ValueError(f"{where}: field 'choices': {e}") from None
    elif card is not None and card.answer_type == "multiple_choice" and card.compat is None:
        raise ValueError(
            f"{where}: field 'choices' missing (card {card.name!r} is multiple choice)"
        )
    if card is not None and card.answer_type == "number" and normalize_number(ans) is None:
        raise ValueError(f"{where}: field 'answer': {ans!r} is not a number (card {card.name!r})")
    if (
        card is not None
        and card.answer_type == "yes_no"
        and card.compat is None
        and str(ans).strip().lower() not in ("yes", "no")
    ):
        raise ValueError(f"{where}: field 'answer': {ans!r} is not yes or no (card {card.name!r})")
    meta = {k: v for k, v in d.items() if k not in ("id", "question", "answer", "choices")}
    return Example(str(d["id"]), q.strip(), str(ans).strip(), choices, meta)


def json_objects(
    path: str | Path, error: type[ValueError] = ValueError
) -> Iterator[tuple[str, dict[str, Any]]]:
    """(file:line, object) for every non-blank line; a bad line raises `error` naming it."""
    for lineno, d in read_jsonl(path, error):
        where = f"{path}:{lineno}"
        if not isinstance(d, dict):
            raise error(f"{where}: expected a JSON object")
        yield where, d


def iter_input_jsonl(
    path: str | Path, card: Any = None
) -> Iterator[tuple[str, Example | ValueError]]:
    """(file:line, Example or the error) for every non-blank line; checked against `card`."""
    for lineno, d in read_jsonl(path, keep_going=True):
        where = f"{path}:{lineno}"
        if isinstance(d, ValueError):
            yield where, d
            continue
        try:
            yield where, _example(d, where, card)
        except ValueError as e:
            yield where, e


def jsonl_source(path: str | Path, limit: int | None = None, card: Any = None) -> ExampleSource:
    """A re-iterable source over an --input file; a bad line raises InputError(file:line)."""
    if not Path(path).is_file():
        raise InputError(f"{path}: input file not found")

    def gen() -> Iterator[Example]:
        n = 0
        for _, item in iter_input_jsonl(path, card):
            if limit is not None and n >= limit:
                return
            if isinstance(item, ValueError):
                raise InputError(str(item))
            n += 1
            yield item

    return gen


def validate_jsonl(path: str | Path, card: Any = None) -> int:
    """Check every line first (before any request is sent); raise listing the bad ones."""
    errors: list[str] = []  # the first MAX_REPORTED only: memory stays flat on huge inputs
    n_bad = n_good = 0
    for _, item in iter_input_jsonl(path, card):
        if isinstance(item, ValueError):
            n_bad += 1
            if len(errors) < MAX_REPORTED:
                errors.append(str(item))
        else:
            n_good += 1
    if n_bad:
        more = f"\n... and {n_bad - MAX_REPORTED} more" if n_bad > MAX_REPORTED else ""
        raise InputError(f"{n_bad} bad input line(s):\n" + "\n".join(errors) + more)
    if not n_good:
        raise InputError(f"{path}: no examples (the file is empty)")
    _check_unique_ids(path, card)
    return n_good


def id_hash(example_id: str) -> int:
    """8-byte hash of an example id: duplicate checks stay small for millions of ids."""
    return int.from_bytes(hashlib.blake2b(example_id.encode(), digest_size=8).digest(), "big")


def duplicate_hashes(hashes: array) -> set[int]:
    """The hashes that occur more than once (sorts `hashes` in place: no copy of 8 B/id)."""
    return sorted_duplicates(hashes)


def _check_unique_ids(path: str | Path, card: Any) -> None:
    """Raise naming file:line of each repeated id; two streaming passes, no list of ids."""

    def examples() -> Iterator[tuple[str, Example]]:
        return ((w, ex) for w, ex in iter_input_jsonl(path, card) if isinstance(ex, Example))

    dup = duplicate_hashes(array("Q", (id_hash(ex.id) for _, ex in examples())))
    if not dup:
        return
    first: dict[str, str] = {}
    errors = []
    for where, ex in examples():
        if id_hash(ex.id) not in dup:
            continue
        if ex.id in first:
            errors.append(f"{where}: field 'id': {ex.id!r} repeats {first[ex.id]}")
        else:
            first[ex.id] = where
    raise InputError(f"{len(errors)} duplicate example id(s):\n" + "\n".join(errors[:MAX_REPORTED]))


def card_source(
    card: Any, split: str, data_dir: str | None = None, limit: int | None = None
) -> ExampleSource:
    """A re-iterable source over a task card's split."""
    return lambda: iter(read_examples(card, split, data_dir=data_dir, limit=limit))


def as_source(examples: Iterable[Example] | ExampleSource) -> ExampleSource:
    """Python API: a sequence or a zero-argument callable; one-shot iterators are listed once."""
    if callable(examples):
        return examples  # type: ignore[return-value]
    if iter(examples) is examples:  # a one-shot iterator cannot be read twice
        examples = list(examples)
    return lambda: iter(examples)  # type: ignore[arg-type]
