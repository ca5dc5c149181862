"""Write a selection's decisions and summary into a directory (JSONL, JSON, Markdown)."""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

from scicot_jax.files import write_jsonl
from scicot_jax.selection.morsd import Selection

_EXPLAIN = {
    "kept": "passed every filter and fit the budget",
    "unknown_example": "record's example id is not in this split's examples",
    "beyond_degree": "sample index >= the diverse-reasoning degree D",
    "empty": "empty rationale",
    "unparsed": "no answer could be parsed from the teacher's output",
    "incorrect": "the teacher's answer is wrong",
    "duplicate": "near-duplicate of a kept sample of the same question",
    "over_budget": "correct and distinct, but a higher RD than the budget allowed",
}


def render_markdown(selection: Selection, title: str = "Rationale selection") -> str:
    """A short human-readable account of what was kept and why."""
    s = selection.summary
    cfg = s["config"]
    lines = [
        f"# {title}",
        "",
        f"{s['kept']} of {s['records']} rationales kept; "
        f"{s['questions_with_kept']} of {s['questions']} questions keep at least one.",
        "",
        f"Similarity: `{cfg['measure']}` >= {cfg['threshold']} is a near-duplicate; "
        f"difficulty scored: {s['scored']}; budget: "
        + (
            f"{cfg['per_question']} per question"
            if cfg["per_question"]
            else f"{cfg['fraction']:.0%} of correct rationales (min {cfg['min_per_question']} "
            "per question)"
            if cfg["fraction"]
            else "none"
        ),
        "",
        "| reason | count | meaning |",
        "|---|---:|---|",
    ]
    for reason, n in s["reasons"].items():
        lines.append(f"| {reason} | {n} | {_EXPLAIN.get(reason, '')} |")
    if s["scored"]:
        lines += [
            "",
            f"Rationale difficulty (RD: the student's NLL per answer token given question + "
            f"rationale without its answer statement) from {s.get('rd_source') or 'the scorer'}:",
            "",
            "| candidates | count | mean | min | 25 % | median | 75 % | max |",
            "|---|---:|---:|---:|---:|---:|---:|---:|",
        ]
        groups = [("kept", s.get("rd_kept"))] + [
            (f"dropped: {r}", dist) for r, dist in (s.get("rd_dropped_by_reason") or {}).items()
        ]
        for name, dist in groups:
            if dist:
                lines.append(
                    f"| {name} | {dist['count']} | {dist['mean']} | {dist['min']} | "
                    f"{dist['p25']} | {dist['median']} | {dist['p75']} | {dist['max']} |"
                )
    lines += _flaw_lines(s.get("flaws"))
    lines += [
        "",
        "Every rationale's fate (kept or the reason it was dropped, its RD, the kept sample a "
        "duplicate resembles) is in `decisions.jsonl`.",
    ]
    return "\n".join(lines) + "\n"


def write_report(
    selection: Selection, out_dir: str | Path, title: str = "Rationale selection"
) -> Path:
    """Write decisions.jsonl, summary.json and report.md under ``out_dir``; returns the .md path."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    write_jsonl(out / "decisions.jsonl", (asdict(d) for d in selection.decisions))
    (out / "summary.json").write_text(json.dumps(selection.summary, indent=2) + "\n")
    md = out / "report.md"
    md.write_text(render_markdown(selection, title))
    return md


def _pct(x: float | None) -> str:
    return "" if x is None else f"{100 * x:.1f} %"


def _flaw_lines(f: dict | None) -> list[str]:
    """Kept vs dropped candidates per flaw class (the oracle teacher's account), with mean RD."""
    if not f:
        return []
    lines = [
        "",
        "By flaw class (the teacher's own account of each correct candidate; mean RD where "
        "scored):",
        "",
        "| flaw | kept | mean RD kept | dropped | mean RD dropped |",
        "|---|---:|---:|---:|---:|",
    ]
    for name, c in f["by_class"].items():
        k, d = c["kept"], c["dropped"]
        lines.append(
            f"| {name} | {k['count']} | {_opt(k['mean_rd'])} | {d['count']} | "
            f"{_opt(d['mean_rd'])} |"
        )
    lines += [
        "",
        f"Kept set: {_pct(f['flawed_share_kept'])} flawed (a wrong step, right answer), "
        f"{_pct(f['rationalised_share_kept'])} rationalised; all {f['candidates']} candidates "
        f"(a random choice's expectation): {_pct(f['flawed_share_candidates'])} flawed, "
        f"{_pct(f['rationalised_share_candidates'])} rationalised.",
    ]
    return lines


def _opt(x: float | None) -> str:
    return "" if x is None else f"{x}"
