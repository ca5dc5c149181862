"""The one grader: a card's evaluation rules for each kind of model output, and the
predictions files every evaluation writes.

Every accuracy the project reports (pipeline evaluation, SeqIO metric functions, the teacher's
records and report, scaling studies) goes through :func:`grader_for`, in percent.

Kinds of output, and where the answer is read (``compat`` cards follow Fine-tune-CoT's
``Evaluator.cleanse_prediction``: the first candidate after the first prefix, else the last
candidate; without a prefix, the first candidate):

- ``one_stage``: a student's ``rationale --> answer``; prefix ``-->``.
- ``rationale``: a rationale ending ``Therefore, the answer is X`` (Sci-CoT Stage 1, the
  answer-conditioned / few-shot teacher); prefix the trigger.
- ``answer``: a bare answer (baseline, Sci-CoT Stage 2); no prefix.
- ``teacher_step2``: a Zero-shot-CoT step-2 completion (it follows the trigger); no prefix.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from scicot_jax import files
from scicot_jax.data import answers

KINDS = ("one_stage", "rationale", "answer", "teacher_step2")
PREFIX = {"one_stage": "-->", "rationale": answers.ANSWER_TRIGGER}
# What a student trained for each SeqIO method / pipeline stage writes.
OUTPUT_KIND = {
    "baseline": "answer",
    "one_stage": "one_stage",
    "stage1": "rationale",
    "stage2": "answer",
}
PREDICTION_FIELDS = ("id", "split", "input", "output", "parsed", "gold", "correct")


@dataclass(frozen=True)
class Grader:
    """Parses one kind of output of one card and compares it with the gold answer."""

    answer_type: str
    compat: str | None
    kind: str

    def __post_init__(self):
        if self.kind not in KINDS:
            raise ValueError(f"unknown output kind {self.kind!r}; expected one of {KINDS}")

    def parse(self, text: str | None, choices: Sequence[tuple[str, str]] = ()) -> str | None:
        """The answer this output gives, normalised (multiple choice: its label), or None."""
        if text is None:
            return None
        prefix = PREFIX.get(self.kind)
        if self.compat is not None:
            return answers.parse_compat(text, self.compat, prefix)
        if self.kind == "teacher_step2":
            text = f"{answers.ANSWER_TRIGGER} {text.strip()}"
        elif self.kind == "one_stage":
            # The student's answer follows its first "-->" (as in Fine-tune-CoT).
            body, found = answers.after_first(text, "-->")
            if found:
                return answers.pick_candidate(body, self.answer_type, choices, first=True)
        return answers.parse_answer(text, self.answer_type, choices=choices)

    def correct(self, parsed: str | None, gold: str) -> bool:
        """Whether a parsed answer equals the gold answer under the card's rules."""
        return answers.answers_match(parsed, gold, self.answer_type, compat=self.compat)

    def grade(
        self, text: str | None, gold: str, choices: Sequence[tuple[str, str]] = ()
    ) -> tuple[str | None, bool]:
        """(parsed answer, correct) of one output."""
        parsed = self.parse(text, choices)
        return parsed, self.correct(parsed, gold)


def grader_for(card: Any, kind: str) -> Grader:
    """The grader of ``card`` (answer_type, compat) for outputs of ``kind``."""
    return Grader(card.answer_type, getattr(card, "compat", None), kind)


def chance_percent(card: Any, examples: Sequence[Any]) -> float | None:
    """Accuracy of a uniform guess, in percent (None where guessing has no fixed odds)."""
    if card.answer_type == "yes_no":
        return 50.0
    if card.answer_type != "multiple_choice" or not examples:
        return None
    compat = getattr(card, "compat", None)
    if compat in answers.COMPAT_LETTERS:
        return round(100.0 / len(answers.COMPAT_LETTERS[compat]), 2)
    if not all(ex.choices for ex in examples):
        return None
    return round(sum(100.0 / len(ex.choices) for ex in examples) / len(examples), 2)


def percent(hits: int, total: int) -> float | None:
    """Accuracy in percent, rounded to 0.01 (None for nothing graded)."""
    return round(100.0 * hits / total, 2) if total else None


def grade_outputs(
    grader: Grader,
    split: str,
    examples: Sequence[Any],
    inputs: Sequence[str],
    outputs: Sequence[str],
) -> list[dict[str, Any]]:
    """One predictions row per example (``PREDICTION_FIELDS``)."""
    rows = []
    for ex, inp, out in zip(examples, inputs, outputs, strict=True):
        parsed, ok = grader.grade(out, ex.answer, ex.choices)
        row = {"id": ex.id, "split": split, "input": inp, "output": out}
        row.update(parsed=parsed, gold=ex.answer, correct=ok)
        if ex.choices:  # what re-grading needs to map choice texts to labels
            row["choices"] = [list(c) for c in ex.choices]
        rows.append(row)
    return rows


def write_predictions(path: str | Path, rows: Iterable[dict[str, Any]]) -> Path:
    """Write predictions rows as JSONL, atomically (a crash leaves the old file or none)."""
    files.write_jsonl(path, rows)
    return Path(path)


def read_predictions(path: str | Path) -> list[dict[str, Any]]:
    """Rows of a predictions JSONL; a bad line names the file, line and field."""
    rows = []
    for n, row in files.read_jsonl(path):
        missing = [k for k in PREDICTION_FIELDS if not isinstance(row, dict) or k not in row]
        if missing:
            raise ValueError(f"{path}:{n}: missing field {missing[0]!r}")
        rows.append(row)
    return rows


def accuracy_from_predictions(
    rows: Sequence[dict[str, Any]], grader: Grader | None = None
) -> dict[str, float | None]:
    """Percent correct per split, from the rows' ``correct`` or, given a grader, by re-grading
    each row's ``output`` against its ``gold``."""
    hits: dict[str, int] = {}
    totals: dict[str, int] = {}
    for r in rows:
        choices = [tuple(c) for c in r.get("choices") or ()]
        ok = grader.grade(r["output"], r["gold"], choices)[1] if grader else r["correct"]
        hits[r["split"]] = hits.get(r["split"], 0) + bool(ok)
        totals[r["split"]] = totals.get(r["split"], 0) + 1
    return {s: percent(hits[s], totals[s]) for s in totals}
