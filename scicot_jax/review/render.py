"""Server-side HTML: Jinja2 templates with autoescaping on (rationales, questions and model outputs
are untrusted text and are shown as text), and the small formatters they use."""

from __future__ import annotations

import json
import re
from functools import cache
from html import escape
from pathlib import Path
from typing import Any

import jinja2
from markupsafe import Markup

TEMPLATES = Path(__file__).with_name("templates")


def fmt(value: Any) -> str:
    """A value of results.json for a table cell: counts with separators, floats shortened."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return f"{value:,}" if abs(value) < 10**10 else f"{value:.3g}"  # FLOPs: 1.32e+11
    if isinstance(value, float):
        if value != 0 and (abs(value) >= 1e6 or abs(value) < 1e-3):
            return f"{value:.3g}"  # FLOPs: 6.3e+08
        text = f"{value:,.1f}" if abs(value) >= 1000 else f"{value:.4g}"
        return text if any(c in text for c in ".en") else text + ".0"  # a float looks like one
    if isinstance(value, str):
        return value
    text = json.dumps(value, ensure_ascii=False)
    return text if len(text) <= 300 else text[:300] + "…"


def flatten(d: Any, prefix: str = "") -> dict[str, Any]:
    """Nested dicts as dotted keys ({'a': {'b': 1}} -> {'a.b': 1}); other values as they are."""
    if not isinstance(d, dict):
        return {prefix: d} if prefix else {}
    out: dict[str, Any] = {}
    for k, v in d.items():
        key = f"{prefix}.{k}" if prefix else str(k)
        if isinstance(v, dict) and v:
            out.update(flatten(v, key))
        else:
            out[key] = v
    return out


def transpose(
    columns: dict[str, dict[str, Any]], fold: int = 8
) -> tuple[list[str], list[tuple[str, list[str]]], list[tuple[str, list[tuple[str, list[str]]]]]]:
    """{column: {field: value}} -> (column names, rows, folded groups). Every key a run writes
    (new per-stage figures included) gets a row, nested keys as dotted names, grouped under
    their top-level key in first-seen order; a group of more than `fold` rows (a selection
    summary) is returned apart, to be shown folded. Rows empty in every column are left out."""
    flat = {name: flatten(d) for name, d in columns.items()}
    groups: dict[str, dict[str, None]] = {}
    for d in flat.values():
        for f in d:
            groups.setdefault(f.split(".", 1)[0], {})[f] = None
    rows, folded = [], []
    for top, fields in groups.items():
        cells = [(f, [fmt(flat[c].get(f)) for c in flat]) for f in fields]
        cells = [(f, cs) for f, cs in cells if any(cs)]
        if len(cells) > fold:
            folded.append((top, cells))
        else:
            rows += cells
    return list(flat), rows, folded


_CODE = re.compile(r"`([^`]+)`")


def _inline(text: str) -> str:
    return _CODE.sub(lambda m: f"<code>{m.group(1)}</code>", escape(text))


def markdown(text: str) -> Markup:
    """The Markdown the run's reports use (headings, pipe tables, paragraphs, `code`), as HTML;
    every character of the input is escaped first."""
    out: list[str] = []
    lines = text.splitlines()
    i = 0
    while i < len(lines):
        line = lines[i].rstrip()
        if not line:
            i += 1
        elif line.startswith("#"):
            level = min(len(line) - len(line.lstrip("#")) + 2, 6)  # under the page's own h2
            out.append(f"<h{level}>{_inline(line.lstrip('#').strip())}</h{level}>")
            i += 1
        elif line.startswith("|"):
            rows = []
            while i < len(lines) and lines[i].startswith("|"):
                cells = [c.strip() for c in lines[i].strip().strip("|").split("|")]
                if not all(re.fullmatch(r":?-+:?", c) for c in cells):
                    rows.append(cells)
                i += 1
            head, *body = rows or [[]]
            out.append("<table><thead><tr>")
            out += [f"<th>{_inline(c)}</th>" for c in head]
            out.append("</tr></thead><tbody>")
            for r in body:
                out.append("<tr>" + "".join(f"<td>{_inline(c)}</td>" for c in r) + "</tr>")
            out.append("</tbody></table>")
        else:
            para = []
            while i < len(lines) and lines[i].strip() and not lines[i].startswith(("#", "|")):
                para.append(lines[i].strip())
                i += 1
            out.append(f"<p>{_inline(' '.join(para))}</p>")
    return Markup("\n".join(out))


@cache
def environment() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(TEMPLATES),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["fmt"] = fmt
    env.filters["markdown"] = markdown
    return env


def page(template: str, **context: Any) -> str:
    """A whole page from templates/<template>."""
    return environment().get_template(template).render(**context)
