"""The rationales page: a store's records joined with their review decisions and the selections'
verdicts (kept or the reason dropped, Rationale Difficulty, near-duplicate), filtered, sorted
and cut into pages."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from scicot_jax.files import read_jsonl
from scicot_jax.review.rundir import RunDir
from scicot_jax.review.state import Item, ReviewState

FILTERS = (
    "all",
    "undecided",
    "reviewed",
    "correct",
    "wrong",
    "kept",
    "dropped",
    "edited",
    "selection kept",
    "selection dropped",
)
SORTS = ("order", "rd", "rd_desc")
PER_PAGE = 50


def selection_verdicts(run: RunDir, store: Path) -> dict[tuple[str, int], list[dict[str, Any]]]:
    """(example_id, sample_index) -> one verdict per selection made from the store."""
    out: dict[tuple[str, int], list[dict[str, Any]]] = {}
    for sel in run.selections_of(store):
        for _, d in read_jsonl(sel / "decisions.jsonl"):
            if isinstance(d, dict) and "example_id" in d:
                key = (d["example_id"], d.get("sample_index"))
                out.setdefault(key, []).append({"selection": sel.name, **d})
    return out


@dataclass
class Query:
    """The page's filter, search, sort and page number, from the URL."""

    show: str = "all"
    q: str = ""
    sort: str = "order"
    page: int = 1

    @classmethod
    def parse(cls, params: Any) -> Query:
        show = params.get("show", "all")
        sort = params.get("sort", "order")
        try:
            number = max(1, int(params.get("page", 1)))
        except ValueError:
            number = 1
        return cls(
            show if show in FILTERS else "all",
            params.get("q", "")[:200],
            sort if sort in SORTS else "order",
            number,
        )


def _matches(item: Item, verdicts: list[dict[str, Any]], show: str, q: str) -> bool:
    """kept / dropped / edited: the review's decision; selection kept / dropped: a selection's."""
    row = item.row
    keep = {
        "all": True,
        "undecided": not item.reviewed,
        "reviewed": item.reviewed,
        "correct": row.get("correct") is True,
        "wrong": row.get("correct") is not True,
        "kept": row["decision"] in ("keep", "edit"),
        "dropped": row["decision"] == "drop",
        "edited": row["decision"] == "edit",
        "selection kept": any(v.get("kept") for v in verdicts),
        "selection dropped": any(v.get("kept") is False for v in verdicts),
    }[show]
    if not keep or not q:
        return keep
    text = " ".join(
        str(row.get(k) or "") for k in ("example_id", "question", "gold", "answer", "rationale")
    )
    return q.lower() in f"{text} {item.original}".lower()


def _rd(verdicts: list[dict[str, Any]]) -> float | None:
    return next((v["rd"] for v in verdicts if isinstance(v.get("rd"), (int, float))), None)


def view(state: ReviewState, verdicts: dict, query: Query) -> dict[str, Any]:
    """The cards of one page and the counts around them."""
    picked = [
        (n, it, vs)
        for n, it in enumerate(state.items)
        for vs in [verdicts.get(it.key, [])]
        if _matches(it, vs, query.show, query.q)
    ]
    if query.sort != "order":
        sign = -1 if query.sort == "rd_desc" else 1
        # records without an RD (wrong ones: never scored) last either way
        picked.sort(key=lambda t: (_rd(t[2]) is None, sign * (_rd(t[2]) or 0.0), t[0]))
    pages = max(1, -(-len(picked) // PER_PAGE))
    number = min(query.page, pages)
    cards = [
        {
            "n": n,
            "row": it.row,
            "original": it.original,
            "version": it.version,
            "reviewed": it.reviewed,
            "verdicts": vs,
            "rd": _rd(vs),
        }
        for n, it, vs in picked[(number - 1) * PER_PAGE : number * PER_PAGE]
    ]
    return {
        "cards": cards,
        "matching": len(picked),
        "page": number,
        "pages": pages,
        "first": (number - 1) * PER_PAGE + 1,
    }
