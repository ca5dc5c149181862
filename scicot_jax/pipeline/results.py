"""results.json and results.md of a pipeline run."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from scicot_jax.files import atomic_write

SPLITS = ("validation", "test")
# results.json's per-stage compute keys -> column names: the student trained on the question
# (baseline, Fine-tune-CoT, Sci-CoT Stage 1), Sci-CoT's Stage 2, MoRSD's probes.
STAGE_NAMES = {"student": "student", "stage2": "Stage 2", "probes": "probes"}


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
        acc = _pct(s.get("accuracy"))
        lines.append(
            f"Teacher run `{kind}`: {s.get('teacher') or s.get('source', '')}, "
            f"temperature {s.get('temperature', '-')}: {s.get('records', 0)} rationales "
            f"for {s.get('questions', 0)} questions, accuracy {acc}% over all samples, "
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
    elif b:
        lines += [
            "",
            f"Budget: match {b.get('match')}, {b.get('tokens', 0):,} train tokens "
            f"(= {b.get('steps')} steps of plain fine-tuning) per method, MoRSD probes included.",
        ]
    cols = [f"{s} acc %" for s in SPLITS]
    for stage in STAGE_NAMES.values():
        cols += [f"{stage} steps", f"{stage} tokens"]
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
            cells += ["", ""] if not st else [str(st["steps"]), f"{st['train_tokens']:,}"]
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
    return "\n".join(lines) + "\n"


def write(run_dir: str | Path, results: dict[str, Any]) -> tuple[Path, Path]:
    """Write results.json and results.md atomically; returns both paths."""
    d = Path(run_dir)
    paths = (d / "results.json", d / "results.md")
    for path, text in zip(paths, (json.dumps(results, indent=2) + "\n", render_markdown(results))):
        atomic_write(path, text)
    return paths
