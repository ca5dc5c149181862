"""The pipeline reads its student predictions from the infer binary's t5x output files."""

import json

from scicot_jax.pipeline import infer_files
from scicot_jax.pipeline.config import StudentConfig
from scicot_jax.pipeline.student import T5Student

TEXTS = ["q one", "q two", "q three"]


def _write_shard(d, shard, n, rows):
    path = d / f"in-predict.jsonl-{shard:05}-of-{n:05}"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


def _row(i, text=None, pred=None):
    return {
        "inputs": {"id": str(i), "inputs_pretokenized": text or TEXTS[i]},
        "prediction": pred or f"p{i}",
    }


def test_inputs_file_rows_are_ids_and_texts(tmp_path):
    path = tmp_path / "in.jsonl"
    infer_files.write_inputs(path, TEXTS)
    rows = [json.loads(x) for x in path.read_text().splitlines()]
    assert rows == [{"id": str(i), "inputs": t} for i, t in enumerate(TEXTS)]


def test_predictions_merge_a_complete_set_of_shards(tmp_path):
    path = tmp_path / "in.jsonl"
    assert infer_files.read_predictions(path, TEXTS) is None  # nothing written yet
    _write_shard(tmp_path, 0, 2, [_row(0), _row(2)])  # t5x's shard 0 of 2: examples 0, 2
    assert infer_files.read_predictions(path, TEXTS) is None  # shard 1 missing
    _write_shard(tmp_path, 1, 2, [_row(1)])
    assert infer_files.read_predictions(path, TEXTS) == ["p0", "p1", "p2"]


def test_predictions_for_other_inputs_are_not_used(tmp_path):
    path = tmp_path / "in.jsonl"
    _write_shard(tmp_path, 0, 1, [_row(0), _row(1, text="an older question"), _row(2)])
    assert infer_files.read_predictions(path, TEXTS) is None
    _write_shard(tmp_path, 0, 1, [_row(0), _row(1)])  # a row missing
    assert infer_files.read_predictions(path, TEXTS) is None


def test_student_reads_an_existing_infer_run_instead_of_decoding(tmp_path):
    """A pod user's infer output beside the inputs file is what the student returns: the
    checkpoint (absent here) is never loaded."""
    _write_shard(tmp_path, 0, 1, [_row(i, pred=f"from infer {i}") for i in range(3)])
    student = T5Student(StudentConfig(vocab=None), task="synthetic_coin_flip")
    got = student.predict(
        str(tmp_path / "no-checkpoint"), TEXTS, stage="baseline", infer_input=tmp_path / "in.jsonl"
    )
    assert got == ["from infer 0", "from infer 1", "from infer 2"]
