"""Student text formats and their inverse."""

from scicot_jax.data.answers import parse_answer
from scicot_jax.data.examples import Example
from scicot_jax.data.formats import (
    SEPARATOR,
    answer_text,
    baseline,
    one_stage,
    render_question,
    split_one_stage,
    stage1,
    stage2,
)
from scicot_jax.data.synthetic import generate, write_rationale

MC = Example("m1", "Which is a gas?", "B", (("A", "ice"), ("B", "steam"), ("C", "rock")))
NUM = Example("n1", "Ann has 3 and gets 4. How many?", "7")


def test_render_question():
    assert render_question(NUM) == NUM.question
    assert render_question(MC) == "Which is a gas?\nAnswer Choices: (A) ice (B) steam (C) rock"
    assert answer_text(MC) == "B" and answer_text(NUM) == "7"


def test_formats():
    rationale = "Ann starts with 3.\n3 + 4 = 7.  Therefore, the answer is 7."
    assert baseline(NUM) == (NUM.question, "7")
    inputs, targets = one_stage(NUM, rationale)
    assert inputs == NUM.question
    assert targets == "Ann starts with 3. 3 + 4 = 7. Therefore, the answer is 7." + SEPARATOR + "7"
    assert stage1(NUM, rationale) == (
        NUM.question,
        "Ann starts with 3. 3 + 4 = 7. Therefore, the answer is 7.",
    )
    inputs, targets = stage2(MC, "Steam is water as a gas.")
    assert inputs == render_question(MC) + "\nRationale: Steam is water as a gas."
    assert targets == "B"
    assert baseline(MC) == (render_question(MC), "B")


def test_one_stage_round_trip():
    for ex in generate("mc_reasoning", "test", 20):
        rationale = write_rationale("mc_reasoning", ex, variant=1)
        _, targets = one_stage(ex, rationale)
        got_rationale, got_answer = split_one_stage(targets)
        assert got_rationale == rationale and got_answer == ex.answer
        assert parse_answer(targets, "multiple_choice", choices=ex.choices) == ex.answer
    assert split_one_stage("no separator here") == ("no separator here", "")
    assert split_one_stage("a --> b --> 5") == ("a --> b", "5")
