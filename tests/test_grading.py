"""The one grader: a table of tricky outputs per answer type and kind of output, Fine-tune-CoT's
rules on compat cards, and predictions files from which accuracy recomputes."""

import json
from types import SimpleNamespace

import pytest

from scicot_jax.data import grading
from scicot_jax.data.cards import load_card
from scicot_jax.data.examples import Example

ABCD = (("A", "north"), ("B", "east"), ("C", "south"), ("D", "west"))


def card(answer_type, compat=None):
    return SimpleNamespace(answer_type=answer_type, compat=compat)


# (answer_type, compat, kind, output, choices, gold, parsed, correct)
TABLE = [
    # -- Fine-tune-CoT compat, student one-stage outputs: first "-->", first candidate after
    (
        "multiple_choice",
        "date_understanding",
        "one_stage",
        "so (B) --> (F) --> (A)",
        (),
        "F",
        "F",
        True,
    ),
    (
        "multiple_choice",
        "date_understanding",
        "one_stage",
        "no arrow: (B) then (F)",
        (),
        "F",
        "F",
        True,
    ),
    ("multiple_choice", "aqua", "one_stage", "(F) is out of range --> E", (), "E", "E", True),
    (
        "multiple_choice",
        "tracking_shuffled_objects",
        "one_stage",
        "x --> D or B",
        (),
        "B",
        "B",
        True,
    ),
    ("number", "multiarith", "one_stage", "3 + 4 = 7 --> 7 --> 9", (), "7", "7", True),
    ("number", "multiarith", "one_stage", "3 + 4 = 7 so 8", (), "7", "8", False),  # no -->: last
    ("number", "multiarith", "one_stage", "--> 7.0", (), "7", "7.0", False),  # exact strings
    ("number", "svamp", "one_stage", "--> 7.0", (), "7", "7", True),  # floats within 1e-6
    ("number", "gsm8k", "one_stage", "--> 1,000", (), "1,000", "1000", True),
    ("yes_no", "coin_flip", "one_stage", "heads --> No. yes", (), "no", "no", True),
    ("yes_no", "strategy_qa", "one_stage", "--> Yes", (), "Yes", "yes", True),  # lower-cased
    ("yes_no", "strategy_qa", "one_stage", "--> yes", (), "Yes", "yes", True),
    ("text", "last_letter_concatenation", "one_stage", 'r --> "ab c".', (), "abc", "abc", True),
    # -- compat, teacher step-2 completions: no prefix, first candidate
    ("number", "svamp", "teacher_step2", " 9. Then 40", (), "9", "9", True),
    (
        "multiple_choice",
        "date_understanding",
        "teacher_step2",
        " (F) 05/01/2021",
        (),
        "F",
        "F",
        True,
    ),
    # -- compat, rationales: first trigger, first candidate after; else the last candidate
    (
        "number",
        "svamp",
        "rationale",
        "2+3=5. Therefore, the answer is 5. Therefore, the answer is 6.",
        (),
        "5",
        "5",
        True,
    ),
    ("number", "svamp", "rationale", "2+3=5 and 6", (), "5", "6", False),
    # -- the card's own rules (no compat)
    ("multiple_choice", None, "one_stage", "(B) then (F) --> (F) --> (A)", (), "F", "F", True),
    ("multiple_choice", None, "one_stage", "x --> (G)", (), "G", "G", True),  # any label A-Z
    ("multiple_choice", None, "one_stage", "it turns --> south", ABCD, "C", "C", True),
    ("multiple_choice", None, "answer", "Z", (), "Z", "Z", True),
    (
        "multiple_choice",
        None,
        "rationale",
        "(A) then (B). Therefore, the answer is (D).",
        ABCD,
        "D",
        "D",
        True,
    ),
    ("multiple_choice", None, "rationale", "first (A), then (C).", ABCD, "C", "C", True),
    ("number", None, "one_stage", "5 + 2 = 7 --> 7 --> 8", (), "7", "7", True),
    ("number", None, "one_stage", "5 + 2 = 7", (), "7", "7", True),
    ("number", None, "answer", "7.0", (), "7", "7", True),
    ("number", None, "teacher_step2", " $1,234.50.", (), "1234.5", "1234.5", True),
    ("yes_no", None, "one_stage", "yes it flips --> no --> yes", (), "no", "no", True),
    ("text", None, "one_stage", "letters --> ab\nmore --> cd", (), "ab", "ab", True),
    ("text", None, "answer", "  AB. ", (), "ab", "ab", True),
    # -- nothing to parse
    ("number", None, "one_stage", "no digits --> none", (), "7", None, False),
    ("multiple_choice", "aqua", "one_stage", "--> none here", (), "A", None, False),
]


@pytest.mark.parametrize("answer_type,compat,kind,output,choices,gold,parsed,correct", TABLE)
def test_tricky_outputs(answer_type, compat, kind, output, choices, gold, parsed, correct):
    g = grading.grader_for(card(answer_type, compat), kind)
    assert g.grade(output, gold, choices) == (parsed, correct)


def test_real_cards_use_their_compat_rules():
    date = grading.grader_for(load_card("ftcot_date_understanding"), "one_stage")
    assert date.grade("(B) is wrong --> (F)", "F") == ("F", True)
    compass = grading.grader_for(load_card("synthetic_compass"), "one_stage")
    assert compass.compat is None and compass.grade("west --> (D)", "D", ABCD) == ("D", True)
    with pytest.raises(ValueError, match="output kind"):
        grading.Grader("number", None, "poem")


def test_predictions_file_recomputes_accuracy(tmp_path):
    exs = [Example(f"q{i}", f"question {i}", "C", ABCD) for i in range(4)]
    outs = ["--> (C)", "(C) --> (A)", "south", "--> west"]
    g = grading.grader_for(card("multiple_choice"), "one_stage")
    rows = grading.grade_outputs(g, "test", exs, [e.question for e in exs], outs)
    path = grading.write_predictions(tmp_path / "predictions_test.jsonl", rows)
    back = grading.read_predictions(path)
    assert set(grading.PREDICTION_FIELDS) <= set(back[0])
    assert [r["correct"] for r in back] == [True, False, True, False]
    assert grading.accuracy_from_predictions(back) == {"test": 50.0}
    assert grading.accuracy_from_predictions(back, g) == {"test": 50.0}  # re-graded outputs
    back[1]["correct"] = True  # a tampered file no longer agrees with its re-grading
    assert grading.accuracy_from_predictions(back) == {"test": 75.0}
    assert grading.accuracy_from_predictions(back, g) == {"test": 50.0}


def test_bad_predictions_line_names_file_line_and_field(tmp_path):
    path = tmp_path / "p.jsonl"
    path.write_text(json.dumps({"id": "a", "split": "test"}) + "\n")
    with pytest.raises(ValueError, match=r"p.jsonl:1: missing field 'input'"):
        grading.read_predictions(path)
    path.write_text("{not json\n")
    with pytest.raises(ValueError, match=r"p.jsonl:1: invalid JSON"):
        grading.read_predictions(path)


def test_cli_recomputes_accuracy_from_predictions(tmp_path, capsys):
    from scicot_jax.pipeline import cli

    exs = [Example(f"q{i}", f"Is {i} even?", "yes", ()) for i in range(4)]
    g = grading.grader_for(load_card("ftcot_coin_flip"), "one_stage")
    outs = ["so --> yes", "--> no", "no then --> yes", "yes"]
    rows = grading.grade_outputs(g, "test", exs, [e.question for e in exs], outs)
    path = grading.write_predictions(tmp_path / "predictions_test.jsonl", rows)
    out = cli.main(["accuracy", str(path), "--task", "ftcot_coin_flip", "--kind", "one_stage"])
    assert out["from_correct"] == out["regraded"] == {"test": 75.0}
    assert '"test": 75.0' in capsys.readouterr().out
