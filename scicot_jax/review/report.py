"""The run report: methods and accuracy, every figure results.json holds, teacher figures,
training curves, plots, a predictions browser and the selection reports. Served as a page, or
written as one self-contained file (plots inlined as data URIs)."""

from __future__ import annotations

import base64
import mimetypes
import secrets
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import quote

from markupsafe import Markup

from scicot_jax.files import read_jsonl
from scicot_jax.review.render import fmt, page, transpose
from scicot_jax.review.rundir import RunDir
from scicot_jax.review.svg import line_chart

MAX_PREDICTIONS = 1000  # per predictions file, wrong answers first
CURVES = ("loss", "accuracy")


def data_uri(path: Path) -> str:
    kind = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
    return f"data:{kind};base64,{base64.b64encode(path.read_bytes()).decode()}"


def _pct(x: object) -> str:
    """An accuracy in percent, one decimal (as results.md shows it)."""
    return f"{x:.1f}" if isinstance(x, (int, float)) and not isinstance(x, bool) else fmt(x)


def _curves(run: RunDir) -> list[dict[str, Any]]:
    """One entry per metrics.jsonl: an SVG chart per curve it has (loss, accuracy vs step)."""
    out = []
    for path in run.metrics_files():
        rows = [r for _, r in read_jsonl(path) if isinstance(r, dict) and "step" in r]
        charts = []
        for key in CURVES:
            pts = [
                (float(r["step"]), float(r[key]))
                for r in rows
                if isinstance(r.get(key), (int, float)) and not isinstance(r.get(key), bool)
            ]
            if pts:
                charts.append(Markup(line_chart({key: pts}, f"{key} vs step")))
        if charts:
            out.append({"name": run.rel(path.parent), "steps": len(rows), "charts": charts})
    return out


def _predictions(run: RunDir) -> tuple[list[dict[str, Any]], list[str]]:
    """Rows of every predictions file, wrong first; and a note per file cut to MAX_PREDICTIONS."""
    rows, notes = [], []
    for step, path in run.predictions():
        method = step.removeprefix("eval_")
        file_rows = [r for _, r in read_jsonl(path) if isinstance(r, dict)]
        file_rows.sort(key=lambda r: (r.get("correct") is True, str(r.get("id"))))
        if len(file_rows) > MAX_PREDICTIONS:
            notes.append(f"{run.rel(path)}: the first {MAX_PREDICTIONS} of {len(file_rows)}")
        for r in file_rows[:MAX_PREDICTIONS]:
            rows.append(
                {
                    "method": method,
                    "split": str(r.get("split", path.stem.removeprefix("predictions_"))),
                    "id": str(r.get("id", "")),
                    "input": str(r.get("input", "")),
                    "gold": fmt(r.get("gold")),
                    "parsed": fmt(r.get("parsed")),
                    "correct": r.get("correct"),
                    "output": str(r.get("output", "")),
                }
            )
    rows.sort(key=lambda r: r["correct"] is True)  # stable: wrong first over all files
    return rows, notes


def _teacher_reports(run: RunDir) -> dict[str, dict[str, Any]]:
    """`scicot-teacher report` of each teacher run (for a run without results.json)."""
    from scicot_jax.teacher.report import report

    out = {}
    for store in run.stores():
        name = run.rel(store)
        if name == "." or name.startswith("teacher_"):
            out[name] = report(store)
    return out


def context(run: RunDir, image_src: Callable[[Path], str]) -> dict[str, Any]:
    """Everything the report template shows."""
    results = run.results() or {}
    methods = results.get("methods") or {}
    splits = list(dict.fromkeys(s for m in methods.values() for s in m.get("accuracy") or {}))
    accuracy = [
        (label, [_pct((m.get("accuracy") or {}).get(s)) for s in splits])
        for label, m in methods.items()
    ]
    teacher = results.get("teacher") or ({} if results else _teacher_reports(run))
    predictions, notes = _predictions(run)
    return {
        "title": str(results.get("task") or run.root.name),
        "run_dir": str(run.root),
        "has_results": bool(results),
        "summary": [(k, fmt(v)) for k, v in results.items() if not isinstance(v, (dict, list))],
        # the rest of results.json (data, step timings, ...), folded, every key shown
        "more": transpose(
            {
                "value": {
                    k: v
                    for k, v in results.items()
                    if isinstance(v, (dict, list)) and k not in ("methods", "teacher")
                }
            },
            fold=10**9,
        )[1],
        "splits": splits,
        "accuracy": accuracy,
        # accuracy has its own table; every other key, nested ones as dotted names, gets a row
        "method_table": transpose(
            {label: {k: v for k, v in m.items() if k != "accuracy"} for label, m in methods.items()}
        ),
        "teacher_table": transpose(teacher),
        "curves": _curves(run),
        "plots": [(run.rel(p), image_src(p)) for p in run.plots()],
        "predictions": predictions,
        "prediction_notes": notes,
        "methods_seen": sorted({r["method"] for r in predictions}),
        "splits_seen": sorted({r["split"] for r in predictions}),
        "selections": [
            (run.rel(sel), (sel / "report.md").read_text(encoding="utf-8"))
            for sel in run.selections()
            if (sel / "report.md").is_file()
        ],
    }


def served(run: RunDir, nonce: str, stores: list[str]) -> str:
    """The report page of the app (plots fetched from /file/)."""
    ctx = context(run, lambda p: f"/file/{quote(run.rel(p))}")
    return page("report.html", static=False, nonce=nonce, stores=stores, **ctx)


def static(run: RunDir) -> str:
    """The report as one file: plots as data URIs, CSS and script inline, no links out."""
    nonce = secrets.token_urlsafe(16)
    return page("report.html", static=True, nonce=nonce, stores=[], **context(run, data_uri))
