"""results.json and results.md of a pipeline run."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from scicot_jax.files import atomic_write

SPLITS = ("validation", "test")
# results.json's per-stage compute keys -> column names: the student trained on the question
# (baseline, Fine-tune-CoT, Sci-CoT Stage 1), Sci-CoT's Stage 2, MoRSD's probes.
STAGE_NAMES = {"student": "student", "stage2": "Stage 2", "probes": "probes"}
STAGES = tuple(STAGE_NAMES)


def compute_of(trained: Sequence[dict]) -> dict:
    """Steps, train tokens and train FLOPs summed over trained students."""
    return {
        k: sum(int(t.get(k) or 0) for t in trained)
        for k in ("steps", "train_tokens", "train_flops")
    }


def _pct(x: float | None) -> str:
    """An accuracy (already in percent) for a table."""
    return "" if x is None else f"{x:.1f}"


def render_markdown(results: dict[str, Any]) -> str:
    """One row per method: accuracy per split, rationales used, training size, time."""
    t = results.get("teacher") or {}
    lines = [
        f"# {results['task']}: results",
        "",
        f"Run directory: `{results['run_dir']}`; student `{results['config']['student']}`; "
        f"wall time {results['wall_seconds']:.0f}s.",
        "",
    ]
    for kind, s in t.items():
        acc = (
            "answers given (the prompt holds the answer; wrong steps: see Rationales)"
            if _answers_given(kind)
            else f"accuracy {_pct(s.get('accuracy'))}% over all samples"
        )
        lines.append(
            f"Teacher run `{kind}`: {s.get('teacher') or s.get('source', '')}, "
            f"temperature {s.get('temperature', '-')}: {s.get('records', 0)} rationales "
            f"for {s.get('questions', 0)} questions, {acc}, "
            f"tokens in/out {s.get('input_tokens', 0)}/{s.get('output_tokens', 0)}."
        )
    b = results["config"].get("budget") or {}
    if b.get("match") == "rationale_student":
        lines += [
            "",
            f"Budget: match rationale_student: the baseline and every rationale-writing student "
            f"(Fine-tune-CoT's, Sci-CoT's Stage 1) train {b.get('steps')} steps each; Sci-CoT's "
            "Stage 2 and MoRSD's probes are overhead, in their own columns.",
        ]
    elif b.get("match") == "none":
        preset = results["config"].get("preset")
        lines += [
            "",
            "Budget: each stage trains to its own budget (no compute matching"
            + (f"; the {preset} paper's recipe, --preset {preset}" if preset else "")
            + "): steps, tokens and FLOPs per stage below.",
        ]
    elif b:
        lines += [
            "",
            f"Budget: match {b.get('match')}, {b.get('tokens', 0):,} train tokens "
            f"(= {b.get('steps')} steps of plain fine-tuning) per method, MoRSD probes included.",
        ]
    cols = [f"{s} acc %" for s in SPLITS]
    for stage in STAGE_NAMES.values():
        cols += [f"{stage} steps", f"{stage} tokens", f"{stage} FLOPs"]
    cols += ["total tokens", "total FLOPs", "seconds"]
    lines += [
        "",
        "| method | D | selection | rationales | train examples | " + " | ".join(cols) + " |",
        "|---|---:|---|---:|---:|" + "---:|" * len(cols),
    ]
    for label, m in results["methods"].items():
        acc = m.get("accuracy", {})
        stages = m.get("stages") or {}
        cells = [_pct(acc.get(s)) for s in SPLITS]
        for key in STAGE_NAMES:
            st = stages.get(key)
            cells += (
                ["", "", ""]
                if not st
                else [str(st["steps"]), f"{st['train_tokens']:,}", f"{st['train_flops']:.2e}"]
            )
        cells += [
            f"{m.get('train_tokens', 0):,}",
            f"{(m.get('train_flops') or 0):.2e}",
            f"{m.get('seconds', 0):.0f}",
        ]
        lines.append(
            f"| {label} | {m.get('degree') or ''} | {m.get('selection', 'none')} | "
            f"{m.get('rationales_used', 0)} | {m.get('train_examples', 0)} | "
            + " | ".join(cells)
            + " |"
        )
    return "\n".join(lines + rationale_lines(results)) + "\n"


def _answers_given(teacher_run: str) -> bool:
    """Whether a teacher run's prompt held the answer (its key starts with the prompt)."""
    from scicot_jax.pipeline.config import ANSWERS_GIVEN

    return teacher_run.startswith(ANSWERS_GIVEN)


def _share(x: float | None) -> str:
    return "" if x is None else f"{100 * x:.1f}"


def rationale_lines(results: dict[str, Any]) -> list[str]:
    """Per CoT method: the teacher rationales it learnt from (the kept set's wrong-step and
    rationalised shares where the oracle knows them, against all candidates'), the teacher's
    accuracy or "answers given", and the Stage-1 student's rationale accuracy on train and test."""
    from scicot_jax.pipeline.config import ANSWERS_GIVEN, PROMPT_FOR

    rows = []
    for label, m in results["methods"].items():
        if m.get("method") == "baseline":
            continue
        f = (m.get("selection_summary") or {}).get("flaws") or {}
        given = PROMPT_FOR.get(m.get("method")) in ANSWERS_GIVEN
        teacher = "answers given" if given else _pct(m.get("teacher_accuracy"))
        s1 = m.get("stage1_rationale_answer_accuracy") or {}
        rows.append(
            f"| {label} | {m.get('rationales_used', 0)} | {_share(f.get('flawed_share_kept'))} | "
            f"{_share(f.get('rationalised_share_kept'))} | "
            f"{_share(f.get('flawed_share_candidates'))} | {teacher} | "
            f"{_pct(s1.get('train'))} | {_pct(s1.get('test'))} |"
        )
    if not rows:
        return []
    return [
        "",
        "Rationales: the kept teacher rationales with a wrong step (flawed right answers and "
        "rationalised ones, where the oracle teacher knows) and rationalised ones (a wrong step, "
        "then the given answer asserted), beside all candidates' share (a random choice's); the "
        'teacher\'s accuracy, or "answers given" where its prompt held the answer; the Sci-CoT '
        "Stage-1 student's rationales: answer accuracy % on train and test.",
        "",
        "| method | rationales | kept with a wrong step % | kept rationalised % | "
        "candidates with a wrong step % | teacher acc % | Stage-1 rationales train % | "
        "Stage-1 rationales test % |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
        *rows,
    ]


def write(run_dir: str | Path, results: dict[str, Any]) -> tuple[Path, Path]:
    """Write results.json and results.md atomically; returns both paths."""
    d = Path(run_dir)
    paths = (d / "results.json", d / "results.md")
    for path, text in zip(paths, (json.dumps(results, indent=2) + "\n", render_markdown(results))):
        atomic_write(path, text)
    return paths
