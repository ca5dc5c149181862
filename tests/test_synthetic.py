"""Synthetic tasks: deterministic, disjoint splits, exact rationales, a working difficulty knob."""

import re
from collections import Counter

import pytest

from scicot_jax.data.answers import answers_match, parse_answer
from scicot_jax.data.examples import Example
from scicot_jax.data.synthetic import SYNTHETIC_TASKS, generate, solve, write_rationale

TASKS = sorted(SYNTHETIC_TASKS)


@pytest.mark.parametrize("task", TASKS)
def test_deterministic_and_disjoint(task):
    first = generate(task, "train", 200, seed=1)
    assert first == generate(task, "train", 200, seed=1)
    assert first != generate(task, "train", 200, seed=2)
    questions = {
        s: {e.question for e in generate(task, s, 100, seed=1)}
        for s in ("train", "validation", "test")
    }
    questions["train"] |= {e.question for e in first}
    assert not questions["train"] & questions["validation"]
    assert not questions["train"] & questions["test"]
    assert not questions["validation"] & questions["test"]
    assert len({e.id for e in first}) == 200


@pytest.mark.parametrize("task", TASKS)
def test_rationales_are_exact_for_every_variant(task):
    spec = SYNTHETIC_TASKS[task]
    for ex in generate(task, "test", 100, difficulty=spec.default_difficulty + 1):
        texts = set()
        for variant in range(spec.num_variants):
            rationale = write_rationale(task, ex, variant)
            pred = parse_answer(rationale, spec.answer_type, choices=ex.choices)
            assert answers_match(pred, ex.answer, spec.answer_type), (rationale, ex.answer)
            assert rationale.endswith(f"Therefore, the answer is {ex.answer}.")
            texts.add(rationale)
        assert len(texts) == spec.num_variants  # variants differ in phrasing
        assert solve(task, Example("x", ex.question, "", ex.choices)) == ex.answer


@pytest.mark.parametrize("task", TASKS)
def test_wrong_gold_is_refused(task):
    ex = generate(task, "train", 1)[0]
    wrong = {"yes": "no", "no": "yes"}.get(
        ex.answer, "zzz" if task == "last_letter" else "A" if ex.answer != "A" else "B"
    )
    if task == "arithmetic":
        wrong = str(int(ex.answer) + 1)
    with pytest.raises(ValueError, match="gold"):
        write_rationale(task, Example(ex.id, ex.question, wrong, ex.choices), 0)


def test_difficulty_knob():
    for d in (1, 3, 6):
        coin = generate("coin_flip", "train", 5, difficulty=d)
        assert all(len(re.findall(r"flips? the coin\.", e.question)) == d for e in coin)
        words = generate("last_letter", "train", 5, difficulty=d)
        assert all(
            len(re.search(r'"(.*)"', e.question).group(1).split()) == d and len(e.answer) == d
            for e in words
        )
        arith = generate("arithmetic", "train", 5, difficulty=d)
        assert all(e.question.count("Then ") == d for e in arith)
        mc = generate("mc_reasoning", "train", 5, difficulty=d)
        assert all(e.question.count(", then ") == d - 1 for e in mc)


def test_mc_reasoning_is_arc_form_without_shortcuts():
    examples = generate("mc_reasoning", "train", 1000, difficulty=3)
    labels = Counter(e.answer for e in examples)
    assert set(labels) == set("ABCD") and min(labels.values()) > 200
    ranks = Counter()
    for e in examples:
        assert e.labels == ("A", "B", "C", "D")
        values = [int(t) for _, t in e.choices]
        assert len(set(values)) == 4 and all(0 <= v <= 99 for v in values)
        gold = int(e.choice_text(e.answer))
        assert len({v % 2 for v in values}) == 1  # parity does not give the answer away
        ranks[sorted(values).index(gold)] += 1
        assert gold == int(write_rationale("mc_reasoning", e).split(" is choice")[0].split()[-1])
    assert min(ranks.values()) > 180  # nor does "pick the smallest/middle/largest"
    words = {w for e in examples for w in re.findall(r"[A-Za-z]+", e.question)}
    assert len(words) < 60  # a small vocabulary a tiny model can learn from scratch


def test_bad_arguments():
    with pytest.raises(ValueError, match="unknown synthetic task"):
        generate("sudoku", "train", 1)
    with pytest.raises(ValueError, match="unknown split"):
        generate("coin_flip", "dev", 1)
    with pytest.raises(ValueError, match="not a coin_flip question"):
        write_rationale("coin_flip", Example("x", "What?", "yes"))


def test_compass_tracks_the_heading_step_by_step():
    examples = generate("compass", "train", 300, difficulty=5)
    assert len({e.question for e in examples}) == 300
    assert {e.answer for e in examples} == set("ABCD")
    for e in examples:
        assert e.choices == (("A", "north"), ("B", "east"), ("C", "south"), ("D", "west"))
        rationale = write_rationale("compass", e, variant=2)
        assert rationale.count("faces") == 6  # the start and one state per turn
    e = generate("compass", "test", 1, difficulty=1)[0]
    start = e.question.split(" faces ")[1].split(".")[0]
    turn = e.question.split(" It ")[1].split(".")[0]
    heads = ["north", "east", "south", "west"]
    shift = {"does not turn": 0, "turns right": 1, "turns around": 2, "turns left": 3}[turn]
    assert e.answer == "ABCD"[(heads.index(start) + shift) % 4]
