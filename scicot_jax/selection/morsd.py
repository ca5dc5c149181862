"""MoRSD: model-oriented rationale selection by accuracy, diversity and difficulty.

Given teacher rationales (rationale-store records) for a set of questions:

1. **Accuracy**: a rationale whose parsed answer is wrong (or unparseable) is dropped.
2. **Difficulty**: every surviving rationale gets a Rationale Difficulty
   ``RD = -mean log p_student(answer | question + reasoning)`` over the answer's tokens, from a
   batched scoring callable (the student's score mode), where the reasoning is the rationale
   without its own answer statement (``difficulty.py`` says why). Lower RD = the rationale makes
   the answer easier for *this* student to produce.
3. **Diversity**: within each question, candidates are visited from lowest RD up (sample order
   when there is no scorer); one whose similarity to an already kept sample of the same
   question reaches the threshold is a near-duplicate and dropped (see ``similarity.py``).
4. **Budget**: keep the lowest-RD survivors, either ``per_question`` of each question, or a
   ``fraction`` of all correct rationales chosen globally by RD (after guaranteeing each question
   ``min_per_question`` so hard questions are not lost entirely).

Every input record gets a ``Decision`` saying whether it was kept and why (and, when a
``flaw_fn`` knows, which flaw the rationale carries: the oracle teacher's own account).

The control (``random_order``): the same filters and budget, candidates visited in a seeded
random order instead of by RD and without the diversity filter: a random choice of as many
rationales per question, against which MoRSD's choice is measured.
"""

from __future__ import annotations

import hashlib
import math
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

from scicot_jax.selection.difficulty import rd_pair
from scicot_jax.selection.similarity import DEFAULT_MEASURE, DEFAULT_THRESHOLD, get_measure

# (inputs, targets) text pairs -> mean token negative log-likelihood of targets, one per pair.
Scorer = Callable[[Sequence[tuple[str, str]]], Sequence[float]]
# (example, rationale) -> (inputs, targets) for scoring: question + rationale -> answer.
PairFn = Callable[[Any, str], tuple[str, str]]

KEPT = "kept"
REASONS = (
    KEPT,
    "unknown_example",
    "beyond_degree",
    "empty",
    "unparsed",
    "incorrect",
    "duplicate",
    "over_budget",
)


@dataclass(frozen=True)
class SelectionConfig:
    """What to filter and how much to keep."""

    require_correct: bool = True  # keep only rationales that reach the right answer
    dedupe: bool = True  # drop near-duplicates of a kept rationale of the same question
    measure: Literal["jaccard", "char_cosine"] = DEFAULT_MEASURE  # near-duplicate similarity
    threshold: float = DEFAULT_THRESHOLD  # near-duplicate similarity threshold
    use_difficulty: bool = True  # rank by rationale difficulty (RD); false: skip RD scoring
    per_question: int | None = None  # keep the k lowest-RD rationales per question
    fraction: float | None = None  # keep this fraction of correct rationales (not per question)
    min_per_question: int = 1  # with fraction: every question keeps at least this many
    max_degree: int | None = None  # only sample_index < max_degree (diverse-reasoning degree D)
    random_order: bool = False  # the control: a seeded random order instead of RD
    seed: int = 0  # random_order's seed

    def __post_init__(self):
        if self.per_question is not None and self.fraction is not None:
            raise ValueError("SelectionConfig: give per_question or fraction, not both")
        if self.fraction is not None and not 0.0 < self.fraction <= 1.0:
            raise ValueError(f"SelectionConfig.fraction must be in (0, 1], got {self.fraction}")
        if self.per_question is not None and self.per_question < 1:
            raise ValueError(f"SelectionConfig.per_question must be >= 1, got {self.per_question}")
        get_measure(self.measure)


@dataclass
class Decision:
    """The fate of one record."""

    example_id: str
    sample_index: int
    kept: bool
    reason: str
    rd: float | None = None
    similar_to: int | None = None  # sample_index of the kept near-duplicate
    similarity: float | None = None
    flaw: str | None = None  # the rationale's flaw, when the teacher knows (oracle_behaviour)


@dataclass
class Selection:
    """Kept records (in input order), one decision per input record, and a summary."""

    kept: list[Any]
    decisions: list[Decision]
    summary: dict = field(default_factory=dict)


def default_pair_fn(example: Any, rationale: str) -> tuple[str, str]:
    """What RD scores: question + the rationale without its answer statement -> answer."""
    return rd_pair(example, rationale)


def _draw(seed: int, example_id: str, sample_index: int) -> float:
    """A uniform draw fixed per (seed, record): the control's order."""
    h = hashlib.sha256(f"{seed}|{example_id}|{sample_index}".encode()).digest()
    return int.from_bytes(h[:8], "big") / 2**64


def _filter_reason(rec: Any, examples: Mapping[str, Any], cfg: SelectionConfig) -> str | None:
    if rec.example_id not in examples:
        return "unknown_example"
    if cfg.max_degree is not None and rec.sample_index >= cfg.max_degree:
        return "beyond_degree"
    if not (rec.rationale or "").strip():
        return "empty"
    if cfg.require_correct and rec.correct is not True:
        return "unparsed" if rec.answer is None else "incorrect"
    return None


def select(
    records: Iterable[Any],
    examples: Mapping[str, Any],
    cfg: SelectionConfig = SelectionConfig(),
    scorer: Scorer | None = None,
    pair_fn: PairFn | None = None,
    flaw_fn: Callable[[Any], str | None] | None = None,
) -> Selection:
    """Run MoRSD over ``records`` (objects with example_id, sample_index, rationale, answer,
    correct); ``flaw_fn(record)`` labels each decision with the rationale's flaw."""
    records = list(records)
    decisions: list[Decision | None] = [None] * len(records)
    candidates: list[int] = []
    for i, rec in enumerate(records):
        reason = _filter_reason(rec, examples, cfg)
        if reason is None:
            candidates.append(i)
        else:
            decisions[i] = Decision(rec.example_id, rec.sample_index, False, reason)

    rd: dict[int, float] = {}
    if cfg.use_difficulty and scorer is not None and candidates:
        pair_fn = pair_fn or default_pair_fn
        pairs = [pair_fn(examples[records[i].example_id], records[i].rationale) for i in candidates]
        scores = list(scorer(pairs))
        if len(scores) != len(pairs):
            raise ValueError(f"scorer returned {len(scores)} scores for {len(pairs)} pairs")
        rd = {i: float(s) for i, s in zip(candidates, scores)}

    def order(i: int) -> tuple[float, int]:
        if cfg.random_order:
            r = records[i]
            return (_draw(cfg.seed, r.example_id, r.sample_index), r.sample_index)
        return (rd.get(i, 0.0), records[i].sample_index)

    by_question: dict[str, list[int]] = defaultdict(list)
    for i in candidates:
        by_question[records[i].example_id].append(i)

    similarity = get_measure(cfg.measure)
    survivors: dict[str, list[int]] = {}
    for qid, idxs in by_question.items():
        kept_here: list[int] = []
        for i in sorted(idxs, key=order):
            dup = None
            if cfg.dedupe and not cfg.random_order:
                for j in kept_here:
                    s = similarity(records[i].rationale, records[j].rationale)
                    if s >= cfg.threshold:
                        dup = (j, s)
                        break
            if dup is None:
                kept_here.append(i)
            else:
                j, s = dup
                decisions[i] = Decision(
                    qid,
                    records[i].sample_index,
                    False,
                    "duplicate",
                    rd.get(i),
                    records[j].sample_index,
                    round(s, 4),
                )
        survivors[qid] = kept_here

    chosen = _apply_budget(survivors, cfg, order, n_correct=len(candidates))
    for idxs in survivors.values():
        for i in idxs:
            ok = i in chosen
            decisions[i] = Decision(
                records[i].example_id,
                records[i].sample_index,
                ok,
                KEPT if ok else "over_budget",
                rd.get(i),
            )
    final = [d for d in decisions if d is not None]
    assert len(final) == len(records)
    if flaw_fn is not None:
        for rec, d in zip(records, final):
            d.flaw = flaw_fn(rec)
    kept = [rec for rec, d in zip(records, final) if d.kept]
    return Selection(kept, final, summarize(final, cfg, scored=bool(rd)))


def _apply_budget(
    survivors: dict[str, list[int]],
    cfg: SelectionConfig,
    order: Callable[[int], tuple[float, int]],
    n_correct: int,
) -> set[int]:
    if cfg.per_question is not None:
        return {i for idxs in survivors.values() for i in idxs[: cfg.per_question]}
    if cfg.fraction is None:
        return {i for idxs in survivors.values() for i in idxs}
    budget = max(1, round(cfg.fraction * n_correct))
    chosen: set[int] = set()
    for idxs in survivors.values():  # already sorted by RD within each question
        chosen.update(idxs[: cfg.min_per_question])
    rest = sorted((i for idxs in survivors.values() for i in idxs if i not in chosen), key=order)
    chosen.update(rest[: max(0, budget - len(chosen))])
    return chosen


def _mean(xs: list[float]) -> float | None:
    return round(sum(xs) / len(xs), 4) if xs else None


def rd_distribution(xs: Sequence[float]) -> dict | None:
    """Count, mean and quantiles (min, 25 %, median, 75 %, max) of RD values."""
    if not xs:
        return None
    v = sorted(xs)
    q = {name: round(v[min(len(v) - 1, int(f * len(v)))], 4) for name, f in
         (("min", 0), ("p25", 0.25), ("median", 0.5), ("p75", 0.75))}  # fmt: skip
    return {"count": len(v), "mean": _mean(v), **q, "max": round(v[-1], 4)}


def summarize(decisions: Sequence[Decision], cfg: SelectionConfig, scored: bool) -> dict:
    """Counts per reason, questions covered, and mean RD of kept vs dropped candidates."""
    reasons = Counter(d.reason for d in decisions)
    questions = {d.example_id for d in decisions}
    covered = {d.example_id for d in decisions if d.kept}
    rd_kept = [d.rd for d in decisions if d.kept and d.rd is not None and math.isfinite(d.rd)]
    rd_dropped = [
        d.rd for d in decisions if not d.kept and d.rd is not None and math.isfinite(d.rd)
    ]
    return {
        "records": len(decisions),
        "kept": reasons.get(KEPT, 0),
        "reasons": {r: reasons.get(r, 0) for r in REASONS if reasons.get(r, 0)},
        "questions": len(questions),
        "questions_with_kept": len(covered),
        "scored": scored,
        "mean_rd_kept": _mean(rd_kept),
        "mean_rd_dropped": _mean(rd_dropped),
        "rd_kept": rd_distribution(rd_kept),
        "rd_dropped": rd_distribution(rd_dropped),
        "rd_dropped_by_reason": {
            r: rd_distribution(
                [
                    d.rd
                    for d in decisions
                    if d.reason == r and d.rd is not None and math.isfinite(d.rd)
                ]
            )
            for r in ("duplicate", "over_budget")
        },  # fmt: skip
        "flaws": flaw_breakdown(decisions),
        "config": asdict(cfg),
    }


def flaw_breakdown(decisions: Sequence[Decision]) -> dict | None:
    """Per flaw class, kept and dropped candidates (correct, within the degree) with their mean
    RD; the flawed and rationalised share of the kept set against all candidates' (what a
    random choice of the same size keeps on average). None when no flaw is known."""
    cands = [d for d in decisions if d.reason in (KEPT, "duplicate", "over_budget")]
    if not any(d.flaw for d in cands):
        return None
    classes: dict[str, dict] = {}
    for d in cands:
        c = classes.setdefault(d.flaw or "unknown", {"kept": [], "dropped": []})
        c["kept" if d.kept else "dropped"].append(d.rd)
    table = {
        name: {
            side: {
                "count": len(rds),
                "mean_rd": _mean([x for x in rds if x is not None and math.isfinite(x)]),
            }
            for side, rds in c.items()
        }
        for name, c in sorted(classes.items())
    }
    kept = [d for d in cands if d.kept]

    def share(ds: Sequence[Decision], flaws: tuple[str, ...]) -> float | None:
        return round(sum(d.flaw in flaws for d in ds) / len(ds), 4) if ds else None

    flawed = ("flawed_right", "rationalised", "flawed")
    return {
        "by_class": table,
        "kept": len(kept),
        "candidates": len(cands),
        "flawed_share_kept": share(kept, flawed),
        "flawed_share_candidates": share(cands, flawed),
        "rationalised_share_kept": share(kept, ("rationalised",)),
        "rationalised_share_candidates": share(cands, ("rationalised",)),
    }
