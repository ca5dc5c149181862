"""gs:// end to end against a GCS-protocol server on loopback (the `gcs_bucket` fixture): training
with MODEL_DIR on gs:// (SIGTERM + resume bitwise), the converter to and from gs://, t5x
checkpoints read from gs://."""

from __future__ import annotations

import sys
from pathlib import Path

import jax
import numpy as np
import pytest
from model_fixtures import enable_compile_cache, tiny_config
from t5x_layout import bf16, flatten, write_legacy_t5x
from test_checkpoints import _cfg, _params, _sigterm_at, _skip
from train_toy import toy_batches

from scicot_jax.paths import as_path
from scicot_jax.train.trainer import train

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tools"))
import convert_checkpoint  # noqa: E402


@pytest.fixture(scope="module", autouse=True)
def _cache(tmp_path_factory):
    enable_compile_cache(tmp_path_factory.mktemp("jax_cache"))


@pytest.mark.slow
def test_train_on_gcs_sigterm_then_resume_is_bitwise_equal(tmp_path, gcs_bucket):
    run = f"{gcs_bucket}/sigterm/run"
    ref = train(_cfg(tmp_path / "ref", 10), lambda s: _skip(toy_batches(), s), return_state=True)
    first = train(_cfg(run, 10), lambda s: _skip(_sigterm_at(6), s), return_state=True)
    assert first.preempted and 1 <= first.step < 10
    assert first.checkpoint_dir == f"{run}/checkpoints"
    assert not Path("gs:").exists()  # nothing leaked into ./gs:/...
    saved = as_path(f"{run}/checkpoints/{first.step}")
    assert (saved / "params").is_dir() and (saved / "meta").is_dir()
    second = train(_cfg(run, 10), lambda s: _skip(toy_batches(), s), return_state=True)
    assert second.step == 10 and not second.preempted
    for a, b in zip(_params(second), _params(ref), strict=True):
        np.testing.assert_array_equal(a, b)
    rows = as_path(f"{run}/train/metrics.jsonl").read_text().splitlines()
    assert len(rows) >= 2 and '"step": 10' in rows[-1]  # both runs appended on gs://
    assert any(p.name.startswith("events.out.tfevents") for p in as_path(f"{run}/train").iterdir())


@pytest.mark.slow
def test_converter_to_and_from_gcs(gcs_bucket):
    """t5x checkpoint on gs:// -> orbax params -> t5x layout -> Hugging Face -> orbax params,
    all on gs://, params bitwise equal at every hop."""
    from scicot_jax.checkpoints import t5x
    from scicot_jax.checkpoints.params_io import load_params
    from scicot_jax.model import init_params

    config = tiny_config()
    params = jax.tree.map(np.asarray, init_params(config, jax.random.key(0)))
    params["token_embedder"]["embedding"] = bf16(params["token_embedder"]["embedding"])
    src = f"{gcs_bucket}/conv/t5x/checkpoint_1000"
    write_legacy_t5x(src, {"target": params, "state": {"step": np.int32(1000)}}, gcs=True)
    want = {k: np.asarray(v, np.float32) for k, v in flatten(params)}

    def same(tree):
        got = dict(flatten(jax.tree.map(np.asarray, jax.device_get(tree))))
        assert got.keys() == want.keys()
        for k, v in want.items():
            np.testing.assert_array_equal(np.asarray(got[k], np.float32), v, err_msg=str(k))

    orbax_dir = f"{gcs_bucket}/conv/orbax"
    assert convert_checkpoint.main(["t5x-to-orbax", src, orbax_dir]) == 0
    cfg, loaded = load_params(orbax_dir)
    assert cfg == config
    same(loaded)
    t5x_dir = f"{gcs_bucket}/conv/back"
    assert convert_checkpoint.main(["orbax-to-t5x", orbax_dir, t5x_dir]) == 0
    back = t5x.read(t5x_dir)
    assert back.step == 0  # a save_params dir has no step
    same(back.params)
    hf_dir = f"{gcs_bucket}/conv/hf"
    assert convert_checkpoint.main(["orbax-to-hf", t5x_dir, hf_dir]) == 0
    assert convert_checkpoint.main(["hf-to-orbax", hf_dir, f"{orbax_dir}2"]) == 0
    same(load_params(f"{orbax_dir}2")[1])
    assert not Path("gs:").exists()


def test_card_data_dir_on_gcs_reads_jsonl_and_csv(gcs_bucket, tmp_path):
    """A card's files under a gs:// data_dir read exactly like local ones (file:line errors too)."""
    from scicot_jax.data.cards import parse_card
    from scicot_jax.data.sources import SourceError, read_examples

    data = as_path(f"{gcs_bucket}/cards")
    (data / "train.jsonl").parent.mkdir(parents=True, exist_ok=True)
    (data / "train.jsonl").write_text(
        '{"q": "Two plus two?", "a": "4"}\n\n{"q": "One?", "a": "1"}\n'
    )
    (data / "d.csv").write_text('q,a\n"Three,\nplus?",3\n')
    (data / "bad.jsonl").write_text('{"q": "x", "a": "1"}\n{oops\n')

    def card(kind, file):
        raw = {
            "name": "t",
            "source": {"type": kind, "files": {"train": file}},
            "fields": {"question": "q", "answer": "a"},
            "answer_type": "number",
            "splits": {"train": "train"},
            "feature_lengths": {"inputs": 64, "targets": 64},
        }
        return parse_card(raw, tmp_path / "t.toml")

    a, b = read_examples(card("jsonl", "train.jsonl"), "train", data_dir=str(data))
    assert (a.question, a.answer, b.answer) == ("Two plus two?", "4", "1")
    (c,) = read_examples(card("csv", "d.csv"), "train", data_dir=str(data))
    assert c.question == "Three,\nplus?" and c.answer == "3"
    with pytest.raises(SourceError, match=r"gs://.*/bad.jsonl:2: invalid JSON"):
        list(read_examples(card("jsonl", "bad.jsonl"), "train", data_dir=str(data)))


def test_pipeline_out_on_gcs_is_pushed_per_step_and_resumes(gcs_bucket, monkeypatch):
    """run_pipeline --out gs://...: every finished step lands in the bucket; a second run (as on
    a new VM) finds them there and skips them."""
    from test_pipeline_flow import FakeStudent, fake_teacher

    from scicot_jax.pipeline import run as run_mod
    from scicot_jax.pipeline import teacher_step
    from scicot_jax.pipeline.config import PipelineConfig, StudentConfig

    monkeypatch.setattr(teacher_step, "run", fake_teacher)
    out = f"{gcs_bucket}/pipeline/run"
    cfg = PipelineConfig(
        task="synthetic_mc",
        out=out,
        methods=("baseline", "finetune_cot:1"),
        limits={"train": 8, "validation": 4, "test": 4},
        student=StudentConfig(steps=1),
    )
    student = FakeStudent()
    res = run_mod.run_pipeline(cfg, student, log=lambda s: None)
    run = as_path(out)
    # the compute table (header, 2 methods) and the rationales table (header, 1 CoT method)
    assert (run / "results.md").read_text().count("\n| ") == 3 + 2
    assert (run / "data" / "DONE.json").exists()
    n_calls = len(student.calls)
    again = run_mod.run_pipeline(cfg, student, log=lambda s: None)
    assert len(student.calls) == n_calls and set(again["skipped_steps"]) == set(again["steps"])
    assert again["methods"]["baseline"]["accuracy"] == res["methods"]["baseline"]["accuracy"]
    assert not Path("gs:").exists()
