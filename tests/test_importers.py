"""Importers of recorded teacher outputs (real data under ../shared/data; skipped if absent)."""

import json

import pytest

from scicot_jax.data import importers as I
from scicot_jax.data.cards import load_card
from scicot_jax.data.examples import Example
from scicot_jax.data.store import RationaleRecord, RationaleStore

CQA_EX = Example(
    "q1",
    "Where?",
    "D",
    (("A", "park"), ("B", "bus"), ("C", "zoo"), ("D", "math problem"), ("E", "x")),
)


def test_split_palm_cuts_at_next_question():
    out = (
        'Only math problem fits. So the answer is (d) math problem.\n\nQ: "The man..."\n'
        "A: So the answer is (a)"
    )
    assert I.split_palm(out, "cqa") == ("Only math problem fits.", "(d) math problem.")
    out = "84 / 2 = 42. The answer is (84 / 2).\n\nQ: There are 15 trees. The answer is (6"
    assert I.split_palm(out, "svamp") == ("84 / 2 = 42.", "(84 / 2).")
    assert I.split_palm("no phrase here\nQ: next", "svamp") == ("no phrase here", None)


def test_parse_palm_answer():
    assert I.parse_palm_answer("(d) math problem.", "cqa", CQA_EX) == "D"
    assert I.parse_palm_answer("( 84.0 / 2.0 ).", "svamp", CQA_EX) == "42"
    assert I.parse_palm_answer("(16 * 17) * 4.", "svamp", CQA_EX) == "1088"
    assert I.parse_palm_answer("((28 - 13) and (28 - 15)).", "svamp", CQA_EX) is None
    assert I.parse_palm_answer(None, "cqa", CQA_EX) is None


def test_write_run_is_resumable(tmp_path):
    card = load_card("synthetic_coin_flip")
    exs = [Example(f"e{i}", f"q{i}", "yes") for i in range(3)]
    recs = [
        RationaleRecord(e.id, 0, "r", "yes", True, "teacher:t", "zero_shot_cot", 0.0) for e in exs
    ]
    run = I.ImportedRun(card, {"card": card.name}, exs, recs[:2])
    I.write_run(run, tmp_path / "r")
    run.records = recs  # an interrupted import finishes without duplicates
    store = I.write_run(run, tmp_path / "r")
    assert len(RationaleStore.open(store.run_dir)) == 3
    assert store.manifest["teacher_accuracy"] == {"train": 100.0}
    assert [e.id for e in RationaleStore.open(tmp_path / "r").examples()] == ["e0", "e1", "e2"]
    other = I.ImportedRun(load_card("synthetic_mc"), {"card": "synthetic_mc"}, exs, recs)
    with pytest.raises(ValueError, match="synthetic_coin_flip"):
        I.write_run(other, tmp_path / "r")


@pytest.mark.parametrize(
    "task,acc",
    [
        ("svamp", 64.20),
        ("multiarith", 77.50),
        ("coin_flip", 90.60),
        ("last_letter_concatenation", 57.00),
    ],
)
def test_finetune_cot_teacher_accuracy(shared_data, task, acc):
    run = I.finetune_cot(task)
    first = [r for r in run.records if r.sample_index == 0]  # one completion per question
    assert len(first) == len(run.examples)
    assert round(100 * sum(r.correct for r in first) / len(first), 2) == acc
    assert {r.split for r in run.records} == {"train", "test"}
    assert run.records[0].source == "teacher:text-davinci-002"
    assert not run.records[0].rationale.startswith(" ")


def test_distill_step_by_step(shared_data):
    svamp = I.distill_step_by_step("svamp")
    assert len(svamp.records) == len(svamp.examples) == 1000
    assert sum(r.answer is None for r in svamp.records) < 60
    assert all("Q:" not in r.rationale for r in svamp.records)
    assert 70 < svamp.accuracy("train") < 80
    cqa = I.distill_step_by_step("cqa", splits=["test"])
    assert len(cqa.records) == 1221 and cqa.records[0].answer in "ABCDE"
    assert 75 < cqa.accuracy() < 85


def test_svamp_multi_cot_to_store(shared_data, tmp_path):
    run = I.svamp_multi_cot()
    assert len(run.examples) == 700 and len(run.records) == 7000
    assert sorted({r.sample_index for r in run.records}) == list(range(10))
    store = I.write_run(run, tmp_path / "mcot")
    again = RationaleStore.open(tmp_path / "mcot")
    assert len(again) == 7000 and again.manifest["samples_per_example"] == 10
    assert again.manifest["card"] == "svamp_multi_cot"
    lines = (tmp_path / "mcot" / "examples.jsonl").read_text().splitlines()
    assert len(lines) == 700 and json.loads(lines[0])["id"] == run.examples[0].id
    assert store.manifest["teacher_accuracy"]["train"] == round(run.accuracy(), 2)
