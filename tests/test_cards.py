"""Task cards: every shipped card loads; a bad card fails naming its path and the field."""

from pathlib import Path

import pytest

from scicot_jax.data.answers import COMPAT_TASKS
from scicot_jax.data.cards import CARDS_DIR, CardError, TaskCard, list_cards, load_card

GOOD = """
name = "my_task"
answer_type = "number"
metric = "accuracy"

[source]
type = "jsonl"
files = { train = "train.jsonl" }

[fields]
question = "q"
answer = "a"

[splits]
train = "train"

[feature_lengths]
inputs = 64
targets = 32
"""


def test_all_shipped_cards_load():
    names = list_cards()
    for name in names:
        card = load_card(name)
        assert isinstance(card, TaskCard) and card.name == name
        assert Path(card.path) == CARDS_DIR / f"{name}.toml"
    ftcot = {load_card(n).compat for n in names if n.startswith("ftcot_")}
    assert ftcot == set(COMPAT_TASKS)  # all 12 Fine-tune-CoT tasks
    for name in (
        "arc_easy",
        "arc_challenge",
        "arc_easy_tfds",
        "arc_challenge_tfds",
        "commonsense_qa",
    ):
        assert name in names
    for name in (
        "synthetic_coin_flip",
        "synthetic_last_letter",
        "synthetic_arithmetic",
        "synthetic_mc",
    ):
        assert load_card(name).source["type"] == "synthetic"


def test_card_by_path(tmp_path):
    path = tmp_path / "mine.toml"
    path.write_text(GOOD)
    card = load_card(str(path))
    assert card.name == "my_task" and card.fields == {"question": "q", "answer": "a"}
    assert card.feature_lengths == {"inputs": 64, "targets": 32}
    assert card.resolve("train.jsonl") == tmp_path / "train.jsonl"
    assert load_card(path) == card


@pytest.mark.parametrize(
    "old, new, field",
    [
        ('answer_type = "number"\n', "", "answer_type"),
        ('answer_type = "number"', 'answer_type = "float"', "answer_type"),
        ('type = "jsonl"', 'type = "parquet"', "source.type"),
        ('type = "jsonl"\n', "", "source.type"),
        ('files = { train = "train.jsonl" }\n', "", "source.files"),
        ('question = "q"\n', "", "fields.question"),
        ("inputs = 64", 'inputs = "64"', "feature_lengths.inputs"),
        ("targets = 32", "targets = 0", "feature_lengths.targets"),
        ('metric = "accuracy"', 'metric = "bleu"', "metric"),
        ('name = "my_task"', 'name = "my_task"\ncompat = "mnist"', "compat"),
        ('name = "my_task"', 'name = "my_task"\nanswer_tpye = "x"', "answer_tpye"),
        ('train = "train"\n\n[feature', "train = 3\n\n[feature", "splits.train"),
        ('train = "train"\n\n[feature', 'train = "train[:x]"\n\n[feature', "splits.train"),
        ('files = { train = "train.jsonl" }', "files = { train = 3 }", "source.files.train"),
    ],
)
def test_bad_card_names_path_and_field(tmp_path, old, new, field):
    assert old in GOOD
    path = tmp_path / "bad.toml"
    path.write_text(GOOD.replace(old, new, 1))
    with pytest.raises(CardError) as err:
        load_card(path)
    assert str(path) in str(err.value) and f"'{field}'" in str(err.value)


def test_bad_synthetic_card(tmp_path):
    path = tmp_path / "syn.toml"
    text = (CARDS_DIR / "synthetic_mc.toml").read_text().replace('"mc_reasoning"', '"sudoku"')
    path.write_text(text)
    with pytest.raises(CardError, match="'source.task'"):
        load_card(path)
    sizes = "sizes = { train = 2000, validation = 200, test = 500 }"
    assert sizes in text
    path.write_text(text.replace('"sudoku"', '"mc_reasoning"').replace(sizes, "sizes = 5"))
    with pytest.raises(CardError, match="'source.sizes'"):
        load_card(path)


def test_unknown_name_and_invalid_toml(tmp_path):
    with pytest.raises(CardError, match="no task card named 'nope'"):
        load_card("nope")
    path = tmp_path / "broken.toml"
    path.write_text("name = ")
    with pytest.raises(CardError, match="invalid TOML") as err:
        load_card(path)
    assert str(path) in str(err.value)
    with pytest.raises(CardError, match="not found"):
        load_card(tmp_path / "missing.toml")
