"""Rationale Difficulty scores the reasoning, not the rationale's own answer statement."""

import random

import pytest
from test_selection import Rec  # the selection tests' stand-in record

from scicot_jax.data.examples import Example
from scicot_jax.data.synthetic import SYNTHETIC_TASKS, generate, write_rationale_and_answer
from scicot_jax.selection import SelectionConfig, select
from scicot_jax.selection.difficulty import rd_pair, sentences, strip_answer_statement
from scicot_jax.selection.report import render_markdown
from scicot_jax.teacher.fakes.oracle_behaviour import compass_rationale, flaw_of, flawed_rationale


@pytest.mark.parametrize("task", sorted(SYNTHETIC_TASKS))
def test_the_answer_statement_is_cut_and_the_reasoning_kept(task):
    for ex in generate(task, "train", 20):
        for v in range(SYNTHETIC_TASKS[task].num_variants):
            rationale, answer = write_rationale_and_answer(task, ex, v)
            reasoning = strip_answer_statement(rationale)
            assert "answer is" not in reasoning and "choice" not in reasoning
            assert f"({answer})" not in reasoning
            assert rationale.startswith(reasoning) and len(sentences(reasoning)) >= 2


def test_numbered_steps_and_numbers_are_not_sentence_ends():
    text = "Start: north. 1. It turns left: west. 2. So 3 + 2 = 5. West is choice (D)."
    assert sentences(text) == ["Start: north.", "1. It turns left: west.", "2. So 3 + 2 = 5.",
                               "West is choice (D)."]  # fmt: skip
    assert strip_answer_statement(text) == "Start: north. 1. It turns left: west. 2. So 3 + 2 = 5."
    # a rationale that is only an answer statement is left as it is
    assert strip_answer_statement("Therefore, the answer is B.") == "Therefore, the answer is B."


def test_a_rationalised_rationale_no_longer_states_its_answer():
    ex = generate("compass", "train", 1)[0]
    sound, label = compass_rationale(ex.question, random.Random(0))
    bad, same = compass_rationale(ex.question, random.Random(0), "rationalised")
    assert label == same == ex.answer
    heading = ("north", "east", "south", "west")["ABCD".index(label)]
    # what RD scores: the sound one's last step names the answer's heading, the rationalised
    # one's another heading, and neither says the label
    inputs, target = rd_pair(ex, sound)
    assert target == label and inputs.endswith(f"{heading}.")
    bad_inputs, _ = rd_pair(ex, bad)
    assert (
        not bad_inputs.endswith(f"{heading}.")
        and f"({label})" not in bad_inputs.split("Rationale:")[1]
    )


def test_the_oracle_knows_each_flaw_of_its_rationales():
    for i, ex in enumerate(generate("compass", "train", 50, difficulty="2-8")):
        for flaw in (None, "flawed_right", "rationalised", "wrong"):
            text, _ = compass_rationale(ex.question, random.Random(i), flaw)
            assert flaw_of("compass", ex.question, text) == (flaw or "sound")
    for ex in generate("arithmetic", "train", 20):
        assert flaw_of("arithmetic", ex.question, write_rationale_and_answer("arithmetic", ex)[0])
        bad = flawed_rationale("arithmetic", ex.question, (), random.Random(1), "rationalised", 0)
        if bad is not None:
            assert flaw_of("arithmetic", ex.question, bad) == "flawed"
    assert flaw_of("nonesuch", "q", "r") is None


def test_random_control_and_flaw_breakdown():
    examples = {f"q{i}": Example(f"q{i}", "Q", "A") for i in range(50)}
    recs = [Rec(f"q{i}", k, "bad" if k == 0 else f"ok {k}") for i in range(50) for k in range(4)]
    flaw = lambda r: "rationalised" if r.rationale == "bad" else "sound"  # noqa: E731
    scorer = lambda pairs: [9.0 if "bad" in i else 1.0 for i, _ in pairs]  # noqa: E731
    cfg = SelectionConfig(per_question=2, max_degree=4)
    morsd = select(recs, examples, cfg, scorer, pair_fn=lambda ex, r: (r, "A"), flaw_fn=flaw)
    f = morsd.summary["flaws"]
    assert f["rationalised_share_kept"] == 0.0 and f["rationalised_share_candidates"] == 0.25
    assert f["by_class"]["rationalised"]["dropped"] == {"count": 50, "mean_rd": 9.0}
    ctrl_cfg = SelectionConfig(per_question=2, max_degree=4, use_difficulty=False,
                               random_order=True, seed=3)  # fmt: skip
    ctrl = select(recs, examples, ctrl_cfg, flaw_fn=flaw)
    again = select(recs, examples, ctrl_cfg, flaw_fn=flaw)
    assert [d.kept for d in ctrl.decisions] == [d.kept for d in again.decisions]  # seeded
    assert len(ctrl.kept) == len(morsd.kept) == 100
    assert 0.1 < ctrl.summary["flaws"]["rationalised_share_kept"] < 0.4  # about half of 1 in 4
    other = select(recs, examples, SelectionConfig(**{**ctrl_cfg.__dict__, "seed": 4}))
    assert [d.kept for d in other.decisions] != [d.kept for d in ctrl.decisions]
    md = render_markdown(morsd)
    assert "| rationalised | 0 |" in md and "0.0 % rationalised" in md
