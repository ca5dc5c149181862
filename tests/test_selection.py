"""MoRSD selection: accuracy filter, near-duplicate removal, RD ranking, budgets, report."""

import json
from dataclasses import dataclass, field

import pytest

from scicot_jax.selection import SelectionConfig, char_cosine, jaccard, select, write_report


@dataclass
class Rec:
    example_id: str
    sample_index: int
    rationale: str
    answer: str | None = "A"
    correct: bool | None = True
    extra: dict = field(default_factory=dict)


EXAMPLES = {"q1": "Q1", "q2": "Q2"}
PAIR = lambda ex, r: (f"{ex} {r}", "A")


def test_similarity_measures():
    assert jaccard("The sum is 5.", "the SUM is 5") == 1.0
    assert jaccard("a b c d", "e f g h") == 0.0
    assert jaccard("", "") == 1.0
    assert 0.99 < char_cosine("add 2 and 3", "add 2 and 3 ") <= 1.0
    assert char_cosine("add two", "xyz qrs") == 0.0
    assert 0.0 < char_cosine("add 2 and 3 to get 5", "add 3 and 2 to get 5") < 1.0


def test_accuracy_filter_and_reasons():
    recs = [
        Rec("q1", 0, "good"),
        Rec("q1", 1, "bad", answer="B", correct=False),
        Rec("q1", 2, "none", answer=None, correct=None),
        Rec("q1", 3, "  "),
        Rec("zz", 0, "orphan"),
        Rec("q2", 5, "deep"),
    ]
    sel = select(recs, EXAMPLES, SelectionConfig(max_degree=4))
    assert [d.reason for d in sel.decisions] == [
        "kept",
        "incorrect",
        "unparsed",
        "empty",
        "unknown_example",
        "beyond_degree",
    ]
    assert [r.rationale for r in sel.kept] == ["good"]
    assert sel.summary["kept"] == 1 and sel.summary["questions_with_kept"] == 1


def test_near_duplicates_dropped_within_question_only():
    base = "Alice has 3 apples and buys 4 more so she has 7 apples in total"
    recs = [
        Rec("q1", 0, base),
        Rec("q1", 1, base.replace("so", "thus") + "."),
        Rec("q1", 2, "Count: 3 plus 4 equals 7."),
        Rec("q2", 0, base),
    ]
    sel = select(recs, EXAMPLES, SelectionConfig(threshold=0.85))
    reasons = [(d.example_id, d.sample_index, d.reason, d.similar_to) for d in sel.decisions]
    assert reasons == [
        ("q1", 0, "kept", None),
        ("q1", 1, "duplicate", 0),
        ("q1", 2, "kept", None),
        ("q2", 0, "kept", None),
    ]
    no_dedupe = select(recs, EXAMPLES, SelectionConfig(dedupe=False))
    assert len(no_dedupe.kept) == 4


def test_rd_ranking_per_question_budget_keeps_lowest_rd():
    rd = {"r0": 2.0, "r1": 0.5, "r2": 1.0, "s0": 3.0, "s1": 0.1}
    recs = [Rec("q1", i, f"r{i} distinct words {i}") for i in range(3)]
    recs += [Rec("q2", i, f"s{i} other text {i}") for i in range(2)]
    calls = []

    def scorer(pairs):
        calls.append(len(pairs))
        return [rd[inp.split()[1]] for inp, _ in pairs]

    sel = select(recs, EXAMPLES, SelectionConfig(per_question=1), scorer=scorer, pair_fn=PAIR)
    assert calls == [5]  # one batched call
    assert sorted((r.example_id, r.sample_index) for r in sel.kept) == [("q1", 1), ("q2", 1)]
    over = [d for d in sel.decisions if d.reason == "over_budget"]
    assert len(over) == 3 and all(d.rd is not None for d in over)
    assert sel.summary["mean_rd_kept"] < sel.summary["mean_rd_dropped"]


def test_duplicate_resolution_prefers_lower_rd():
    recs = [Rec("q1", 0, "same words here"), Rec("q1", 1, "same words here")]
    scorer = lambda pairs: [5.0, 1.0]
    sel = select(recs, EXAMPLES, SelectionConfig(), scorer=scorer, pair_fn=PAIR)
    assert [r.sample_index for r in sel.kept] == [1]
    assert sel.decisions[0].reason == "duplicate" and sel.decisions[0].similar_to == 1


def test_fraction_budget_global_with_min_per_question():
    recs = [Rec("q1", i, f"q1 path {i} w{i}") for i in range(6)]
    recs += [Rec("q2", i, f"q2 path {i} v{i}") for i in range(2)]
    rd = [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 9.0, 8.0]
    scorer = lambda pairs: rd
    sel = select(recs, EXAMPLES, SelectionConfig(fraction=0.5), scorer=scorer, pair_fn=PAIR)
    kept = sorted((r.example_id, r.sample_index) for r in sel.kept)
    # budget 4 of 8: q2's best (RD 8.0) is guaranteed, then the 3 lowest RD overall.
    assert kept == [("q1", 0), ("q1", 1), ("q1", 2), ("q2", 1)]
    strict = select(
        recs,
        EXAMPLES,
        SelectionConfig(fraction=0.5, min_per_question=0),
        scorer=scorer,
        pair_fn=PAIR,
    )
    assert {r.example_id for r in strict.kept} == {"q1"}


def test_bad_config_and_scorer_mismatch():
    with pytest.raises(ValueError, match="not both"):
        SelectionConfig(per_question=1, fraction=0.5)
    with pytest.raises(ValueError, match="unknown similarity"):
        SelectionConfig(measure="edit")
    with pytest.raises(ValueError, match="1 scores for 2"):
        select(
            [Rec("q1", 0, "a"), Rec("q1", 1, "b")], EXAMPLES, scorer=lambda p: [0.0], pair_fn=PAIR
        )


def test_report_files(tmp_path):
    recs = [Rec("q1", 0, "x y"), Rec("q1", 1, "x y"), Rec("q2", 0, "z", correct=False)]
    sel = select(recs, EXAMPLES, SelectionConfig(per_question=2))
    md = write_report(sel, tmp_path / "sel")
    text = md.read_text()
    assert "1 of 3 rationales kept" in text and "| duplicate | 1 |" in text
    lines = (tmp_path / "sel" / "decisions.jsonl").read_text().splitlines()
    assert [json.loads(x)["reason"] for x in lines] == ["kept", "duplicate", "incorrect"]
    assert json.loads((tmp_path / "sel" / "summary.json").read_text())["kept"] == 1
