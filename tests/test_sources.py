"""Sources: every reader, on tiny local stand-ins and (when present) on the shared real data."""

import json

import pytest

from scicot_jax.data.cards import parse_card
from scicot_jax.data.sources import SourceError, eval_equation, read_examples


def make_card(tmp_path, source, fields=None, answer_type="number", splits=None, **extra):
    raw = {
        "name": "t",
        "source": source,
        "fields": fields or {},
        "answer_type": answer_type,
        "splits": splits or {"train": "train"},
        "feature_lengths": {"inputs": 64, "targets": 64},
        **extra,
    }
    return parse_card(raw, tmp_path / "t.toml")


def write_lines(path, lines):
    path.write_text("\n".join(lines) + "\n")
    return path


def test_jsonl_field_mapping(tmp_path):
    write_lines(tmp_path / "train.jsonl", [
        json.dumps({"uid": 7, "q": {"stem": "Pick one"}, "opts": ["red", "blue"], "gold": "blue", "src": "x"}),
        "",
        json.dumps({"uid": 8, "q": {"stem": "Again"}, "opts": ["red", "blue"], "gold": "A", "src": "y"}),
    ])  # fmt: skip
    fields = {
        "id": "uid",
        "question": "q.stem",
        "answer": "gold",
        "choices": "opts",
        "source": "src",
    }
    card = make_card(
        tmp_path, {"type": "jsonl", "files": {"train": "train.jsonl"}}, fields, "multiple_choice"
    )
    a, b = read_examples(card, "train")
    assert (a.id, a.question, a.answer, a.choices) == (
        "7",
        "Pick one",
        "B",
        (("A", "red"), ("B", "blue")),
    )
    assert a.meta == {"source": "x"} and b.answer == "A"


def test_jsonl_malformed_records_name_file_and_line(tmp_path):
    card = make_card(
        tmp_path,
        {"type": "jsonl", "files": {"train": "train.jsonl"}},
        {"question": "q", "answer": "a"},
    )
    path = write_lines(tmp_path / "train.jsonl", ['{"q": "1+1?", "a": 2}', "", '{"q": "2+2?"'])
    with pytest.raises(SourceError, match=f"{path}:3: invalid JSON"):
        list(read_examples(card, "train"))
    write_lines(path, ['{"q": "1+1?", "a": 2}', '{"question": "2+2?", "a": 4}'])
    with pytest.raises(SourceError, match=f"{path}:2: record lacks field 'q'"):
        list(read_examples(card, "train"))
    write_lines(path, ['{"q": "1+1?", "a": "two"}'])
    with pytest.raises(SourceError, match=f"{path}:1: .*not a number"):
        list(read_examples(card, "train"))


def test_json_array_and_csv(tmp_path):
    (tmp_path / "d.json").write_text('[\n  {"Body": "Ann has 2.", "Question": "How many?", "Answer": 2.0},\n'
                                     '  {"Body": "Ben has 3.",\n   "Question": "How many?"}\n]')  # fmt: skip
    fields = {"question": "{Body} {Question}", "answer": "Answer"}
    card = make_card(tmp_path, {"type": "json", "files": {"train": "d.json"}}, fields)
    it = read_examples(card, "train")
    assert next(it).question == "Ann has 2. How many?"
    with pytest.raises(SourceError, match=r"d\.json:3: record lacks field 'Answer'"):
        next(it)
    write_lines(tmp_path / "d.csv", ["q,a", "What is 2+3?,5", '"Six, minus one?",5'])
    card = make_card(
        tmp_path, {"type": "csv", "files": {"train": "d.csv"}}, {"question": "q", "answer": "a"}
    )
    assert [e.question for e in read_examples(card, "train")] == ["What is 2+3?", "Six, minus one?"]
    assert [e.id for e in read_examples(card, "train")] == ["t-train-0", "t-train-1"]


def test_split_slices_and_limit(tmp_path):
    write_lines(tmp_path / "a.jsonl", [json.dumps({"q": f"q{i}", "a": i}) for i in range(10)])
    splits = {"train": "all[:80%]", "validation": "all[-2:]", "test": "all"}
    card = make_card(tmp_path, {"type": "jsonl", "files": {"all": "a.jsonl"}},
                     {"question": "q", "answer": "a"}, splits=splits)  # fmt: skip
    assert [e.answer for e in read_examples(card, "train")] == [str(i) for i in range(8)]
    assert [e.answer for e in read_examples(card, "validation")] == ["8", "9"]
    assert len(list(read_examples(card, "test", limit=3))) == 3
    with pytest.raises(SourceError, match="no split 'dev'"):
        read_examples(card, "dev")


def arc_line(i, labels, key):
    choices = [{"label": lb, "text": f"option {lb}"} for lb in labels]
    return json.dumps(
        {
            "id": f"q{i}",
            "question": {"stem": f"Question {i}?", "choices": choices},
            "answerKey": key,
        }
    )


def test_arc_jsonl(tmp_path):
    path = write_lines(tmp_path / "ARC-train.jsonl", [arc_line(0, "ABCD", "C"), arc_line(1, "1234", "2"),
                                                      arc_line(2, "ABC", "E")])  # fmt: skip
    card = make_card(
        tmp_path,
        {"type": "arc", "files": {"train": "ARC-train.jsonl"}},
        answer_type="multiple_choice",
    )
    it = read_examples(card, "train")
    a, b = next(it), next(it)
    assert a.answer == "C" and a.labels == ("A", "B", "C", "D") and a.question == "Question 0?"
    assert b.answer == "B" and b.labels == ("A", "B", "C", "D")  # numeric labels become letters
    with pytest.raises(SourceError, match=f"{path}:3: answer 'E' is not a choice"):
        next(it)


def test_arc_shared_data(shared_data):
    sizes = {("arc_easy", "train"): 2251, ("arc_easy", "test"): 2376,
             ("arc_challenge", "train"): 1119, ("arc_challenge", "test"): 1172}  # fmt: skip
    for (name, split), n in sizes.items():
        examples = list(read_examples(name, split, data_dir=shared_data / "arc"))
        assert len(examples) == n and len({e.id for e in examples}) == n
        assert all(e.answer in e.labels and 3 <= len(e.choices) <= 5 for e in examples)


def test_tfds_missing_data_dir_is_clear(tmp_path):
    with pytest.raises(SourceError, match="not prepared under data_dir") as err:
        list(read_examples("arc_easy_tfds", "train", data_dir=tmp_path / "nowhere"))
    assert "tfds build ai2_arc" in str(err.value)


def test_finetune_cot_formats(tmp_path):
    data = {"metadata": {"dataset_key": "svamp"}, "data": {
        "0": [{"question": "Q0", "answer": "1.0", "completion": " 1."}],
        "1": [{"question": "Q1", "answer": "2.0"}, {"question": "Q1", "answer": "2.0"}],
        "2": [{"question": "Q2"}],
    }}  # fmt: skip
    (tmp_path / "D.json").write_text(json.dumps(data, indent=1))
    (tmp_path / "split.json").write_text(json.dumps({"train": [1, 0], "test": [2]}))
    source = {"type": "finetune_cot", "file": "D.json", "split_file": "split.json"}
    card = make_card(tmp_path, source, splits={"train": "train", "test": "test"}, compat="svamp")
    a, b = read_examples(card, "train")
    assert (a.id, a.question, a.answer, a.meta) == ("t-1", "Q1", "2.0", {"sample_index": 1})
    assert b.question == "Q0"
    with pytest.raises(SourceError, match=r"D\.json:\d+: sample 2 needs 'question' and 'answer'"):
        list(read_examples(card, "test"))
    # The original dataset format: a plain list of samples.
    (tmp_path / "D.json").write_text(
        json.dumps([{"question": "L0", "answer": "3"}, {"question": "L1", "answer": "4"}])
    )
    assert [e.question for e in read_examples(card, "train")] == ["L1", "L0"]
    (tmp_path / "split.json").write_text('{"train": [1,\n 0,]}')
    with pytest.raises(SourceError, match=r"split\.json:2: invalid JSON"):
        list(read_examples(card, "train"))


def test_finetune_cot_shared_data(shared_data):
    data = shared_data / "finetune_cot"
    sizes = {"svamp": (700, 300), "multiarith": (420, 180), "coin_flip": (350, 150),
             "last_letter_concatenation": (350, 150)}  # fmt: skip
    for task, (n_train, n_test) in sizes.items():
        train = list(read_examples(f"ftcot_{task}", "train", data_dir=data))
        test = list(read_examples(f"ftcot_{task}", "test", data_dir=data))
        assert (len(train), len(test)) == (n_train, n_test)
        assert not {e.id for e in train} & {e.id for e in test}
    with pytest.raises(SourceError, match="D_gsm8k.json"):
        list(read_examples("ftcot_gsm8k", "train", data_dir=data))


def test_dsbs_readers(tmp_path):
    write_lines(tmp_path / "cqa.json", [
        json.dumps({"id": "c1", "question": "Where?", "choices": ["park", "bridge", "bridge"], "answer": "bridge"}),
        json.dumps({"id": "c2", "question": "Who?", "choices": ["a", "b"], "answer": "z"}),
    ])  # fmt: skip
    card = make_card(tmp_path, {"type": "dsbs", "dataset": "cqa", "files": {"train": "cqa.json"}},
                     answer_type="multiple_choice")  # fmt: skip
    it = read_examples(card, "train")
    assert next(it).answer == "B"
    with pytest.raises(SourceError, match=r"cqa\.json:2: .*not a choice"):
        next(it)
    write_lines(tmp_path / "svamp.json", [json.dumps({"input": "Luke has 84.\nHow many?", "label": "( 84.0 / 2.0 )"}),
                                          json.dumps({"input": "x", "label": "import os"})])  # fmt: skip
    card = make_card(
        tmp_path, {"type": "dsbs", "dataset": "svamp", "files": {"train": "svamp.json"}}
    )
    it = read_examples(card, "train")
    ex = next(it)
    assert (ex.question, ex.answer, ex.meta["equation"]) == (
        "Luke has 84. How many?",
        "42",
        "( 84.0 / 2.0 )",
    )
    with pytest.raises(SourceError, match=r"svamp\.json:2: bad svamp record"):
        next(it)
    assert eval_equation("( ( 3.0 + 4.0 ) * -2.0 )") == -14.0


def test_dsbs_shared_data(shared_data):
    dsbs = shared_data / "distill_step_by_step"
    cqa = list(read_examples("commonsense_qa", "test", data_dir=dsbs / "cqa"))
    assert len(cqa) == 1221 and all(e.answer in "ABCDE" and len(e.choices) == 5 for e in cqa)
    svamp = list(read_examples("dsbs_svamp", "train", data_dir=dsbs / "svamp"))
    assert len(svamp) == 800 and svamp[0].answer == "42"
    data = shared_data / "svamp_multi_cot"
    assert len(list(read_examples("svamp_multi_cot", "validation", data_dir=data))) == 150


def test_synthetic_source():
    examples = list(read_examples("synthetic_mc", "validation", limit=5))
    assert len(examples) == 5 and all(len(e.choices) == 4 for e in examples)
    assert examples == list(read_examples("synthetic_mc", "validation", limit=5))


@pytest.mark.slow  # imports TensorFlow: ~1 min on 2 busy cores
def test_tfds_reader_on_a_mocked_prepared_dataset(tmp_path):
    """The TFDS path end to end, with tfds' own mock standing in for prepared files (~10 s: TF)."""
    tf = pytest.importorskip("tensorflow")
    tfds = pytest.importorskip("tensorflow_datasets")
    (tmp_path / "ai2_arc").mkdir()
    records = {
        "id": ["x1", "x2"],
        "question": ["Which is hot? ", "Which is cold?"],
        "answerKey": ["B", "3"],
        "choices": {
            "text": tf.constant([["ice", "fire", "snow"], ["sun", "lava", "ice"]]),
            "label": tf.constant([["A", "B", "C"], ["1", "2", "3"]]),
        },
    }

    def as_dataset_fn(self, split, **kwargs):
        assert split == "validation"
        return tf.data.Dataset.from_tensor_slices(records)

    with tfds.testing.mock_data(
        as_dataset_fn=as_dataset_fn, policy=tfds.testing.MockPolicy.USE_CODE
    ):
        a, b = read_examples("arc_easy_tfds", "validation", data_dir=tmp_path)
    assert (a.id, a.question, a.answer, a.choice_text("B")) == ("x1", "Which is hot?", "B", "fire")
    assert b.labels == ("A", "B", "C") and b.answer == "C"
