"""Manual cleaning (Sci-CoT cleans teacher rationales by hand): export, then apply decisions.

`export` writes one JSON line per record with a `decision` (keep | drop | edit; default keep
for correct answers, drop otherwise) and the `rationale` text. The reviewer changes decisions
and, for `edit`, the rationale. `apply_review` writes a new run with the kept and edited
records (answers re-parsed, correctness re-checked); the original run is never modified.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
from pathlib import Path
from typing import Any

from scicot_jax.data.answers import ANSWER_TRIGGER, answers_match, parse_answer
from scicot_jax.data.examples import Example
from scicot_jax.data.formats import render_question
from scicot_jax.data.store import RationaleRecord, RationaleStore
from scicot_jax.files import write_jsonl
from scicot_jax.teacher.inputs import json_objects

DECISIONS = ("keep", "drop", "edit")


class ReviewError(ValueError):
    """A review file line is malformed; the message names file:line and field."""


def review_row(rec: RationaleRecord, ex: Example | None) -> dict[str, Any]:
    """A store record's line of the review file, decided by default: keep it if it is correct."""
    return {
        "example_id": rec.example_id,
        "sample_index": rec.sample_index,
        "question": render_question(ex) if ex else None,
        "gold": ex.answer if ex else None,
        "answer": rec.answer,
        "correct": rec.correct,
        "decision": "keep" if rec.correct else "drop",
        "rationale": rec.rationale,
    }


def export(run_dir: str | os.PathLike[str], out: str | os.PathLike[str] | None = None) -> Path:
    """Write the review file (default RUN_DIR/review.jsonl); returns its path."""
    store = RationaleStore.open(run_dir)
    examples = {ex.id: ex for ex in store.examples()}
    out = Path(out) if out else Path(run_dir) / "review.jsonl"
    rows = (
        review_row(rec, examples.get(rec.example_id))
        for rec in store.records()
        for ex in [examples.get(rec.example_id)]
    )
    write_jsonl(out, rows)
    return out


def _read_decisions(path: Path) -> dict[tuple[str, int], tuple[str, str, str]]:
    """(example_id, sample_index) -> (decision, rationale, file:line)."""
    out: dict[tuple[str, int], tuple[str, str, str]] = {}
    for where, d in json_objects(path, ReviewError):
        if not isinstance(d.get("example_id"), str):
            raise ReviewError(f"{where}: field 'example_id' missing or not a string")
        if not isinstance(d.get("sample_index"), int) or isinstance(d["sample_index"], bool):
            raise ReviewError(f"{where}: field 'sample_index' missing or not an integer")
        if d.get("decision") not in DECISIONS:
            raise ReviewError(
                f"{where}: field 'decision' must be one of {DECISIONS}, got {d.get('decision')!r}"
            )
        if not isinstance(d.get("rationale"), str) or (
            d["decision"] == "edit" and not d["rationale"].strip()
        ):
            raise ReviewError(f"{where}: field 'rationale' missing or empty")
        key = (d["example_id"], d["sample_index"])
        if key in out:
            raise ReviewError(f"{where}: second decision for {key} (first at {out[key][2]})")
        out[key] = (d["decision"], d["rationale"], where)
    return out


def apply_review(
    run_dir: str | os.PathLike[str],
    review_file: str | os.PathLike[str],
    out_dir: str | os.PathLike[str] | None = None,
    missing: str = "error",
) -> dict[str, Any]:
    """Write a reviewed copy of the run; `missing` (error | keep | drop) for unreviewed records."""
    src = RationaleStore.open(run_dir)
    decisions = _read_decisions(Path(review_file))
    out_dir = Path(out_dir) if out_dir else Path(f"{Path(run_dir).resolve()}-reviewed")
    if RationaleStore.is_run_dir(out_dir):
        raise FileExistsError(f"{out_dir}: already a run; choose another --out")
    examples = {ex.id: ex for ex in src.examples()}
    manifest = {k: v for k, v in src.manifest.items() if k not in ("format", "created")}
    counts = {"keep": 0, "drop": 0, "edit": 0, "unreviewed": 0}
    at, compat = manifest.get("answer_type"), manifest.get("compat")
    kept = []
    for rec in src.records():
        entry = decisions.pop(rec.key, None)
        if entry is None:
            if missing not in ("keep", "drop"):
                raise ReviewError(
                    f"{review_file}: no decision for example_id="
                    f"{rec.example_id!r} sample_index={rec.sample_index}"
                )
            counts["unreviewed"] += 1
            entry = (missing, rec.rationale, "?")
        decision, text, where = entry
        counts[decision] += 1
        if decision == "drop":
            continue
        if decision == "keep" and text.strip() != rec.rationale.strip():
            raise ReviewError(f"{where}: rationale changed but decision is 'keep' (use 'edit')")
        if decision == "edit":
            ex = examples.get(rec.example_id)
            answer = rec.answer
            if ANSWER_TRIGGER in text and at:  # the edit states an answer: trust the edit
                answer = parse_answer(text, at, choices=ex.choices if ex else ())
            correct = (
                answers_match(answer, ex.answer, at, compat=compat) if ex and at else rec.correct
            )
            rec = dataclasses.replace(
                rec,
                rationale=text.strip(),
                answer=answer,
                correct=correct,
                extra={**rec.extra, "review": "edit", "original_rationale": rec.rationale},
            )
        else:
            rec = dataclasses.replace(rec, extra={**rec.extra, "review": "keep"})
        kept.append(rec)
    if decisions:
        key, (_, _, where) = next(iter(decisions.items()))
        raise ReviewError(f"{where}: {key} is not a record of {run_dir}")
    manifest.update(
        reviewed_from=str(Path(run_dir).resolve()), review_file=str(review_file), review=counts
    )
    dst = RationaleStore.create(out_dir, manifest)
    if src.examples_path.exists():
        shutil.copyfile(src.examples_path, dst.examples_path)
    dst.extend(kept)
    dst.close()
    return {"out_dir": str(out_dir), **counts, "records": len(kept)}
