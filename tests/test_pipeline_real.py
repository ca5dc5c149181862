"""Real recorded rationales flow through the pipeline and the study (tiny students, few steps).

Multi-CoT SVAMP (10 teacher rationales per question) with MoRSD, CQA PaLM rationales with
Sci-CoT's two stages, and a D sweep of the scaling study on SVAMP. Students from scratch score
low here: the point is that real data passes every step.
"""

import json

import pytest

from scicot_jax.pipeline.config import PipelineConfig, StudentConfig, TeacherConfig
from scicot_jax.pipeline.run import run_pipeline
from scicot_jax.pipeline.study_cli import main as study_main

pytestmark = pytest.mark.slow  # whole pipelines on real data: about a minute each

TINY = StudentConfig(steps=2, batch_size=8, eval_batch_size=16, vocab_size=256)


@pytest.fixture
def real(shared_data):
    for sub in ("svamp_multi_cot", "distill_step_by_step/cqa/palm"):
        assert (shared_data / sub).is_dir(), f"{shared_data / sub}: real data missing"
    return shared_data


def test_svamp_multi_cot_morsd(real, tmp_path):
    cfg = PipelineConfig(
        task="svamp_multi_cot",
        out=str(tmp_path / "svamp"),
        methods=("finetune_cot+morsd:10",),
        limits={"train": 24, "validation": 8, "test": 8},
        teacher=TeacherConfig(backend="import", importer="svamp_multi_cot"),
        student=TINY,
    )
    res = run_pipeline(cfg, log=lambda s: None)
    m = res["methods"]["finetune_cot+morsd:10"]
    summary = m["selection_summary"]
    assert summary["records"] == 240 and summary["scored"]  # 24 questions x 10 rationales
    assert 0 < m["rationales_used"] <= 24  # MoRSD default: the best one per question
    assert 50 < res["teacher"]["import"]["accuracy"] <= 100  # percent
    assert set(m["accuracy"]) == {"validation", "test"}
    decisions = (tmp_path / "svamp/select_finetune_cot-morsd_d10/decisions.jsonl").read_text()
    assert all(
        json.loads(x)["reason"] in ("kept", "over_budget", "duplicate", "incorrect", "unparsed")
        for x in decisions.splitlines()
    )


def test_cqa_palm_scicot_two_stage(real, tmp_path):
    cfg = PipelineConfig(
        task="commonsense_qa",
        out=str(tmp_path / "cqa"),
        methods=("scicot:1",),
        limits={"train": 20, "test": 8},
        validation_fraction=0.2,
        teacher=TeacherConfig(backend="import", importer="dsbs:cqa"),
        student=TINY,
    )
    res = run_pipeline(cfg, log=lambda s: None)
    assert res["data"]["splits"] == {"train": 16, "validation": 4, "test": 8}
    m = res["methods"]["scicot:1"]
    assert 0 < m["rationales_used"] <= 16 and m["train_examples"] == 16
    assert set(m["stage1_rationale_answer_accuracy"]) == {"train", "validation", "test"}


def test_study_on_svamp_multi_cot(real, tmp_path, capsys):
    study = tmp_path / "study"
    rc = study_main(
        [
            "run",
            "--out",
            str(study),
            "--methods",
            "finetune_cot",
            "--degrees",
            "1,10",
            "--students",
            "tiny",
            "--",
            "--task",
            "svamp_multi_cot",
            "--teacher.backend",
            "import",
            "--teacher.importer",
            "svamp_multi_cot",
            "--limits",
            "train=16",
            "--limits",
            "validation=4",
            "--limits",
            "test=4",
            "--student.steps",
            "1",
            "--student.batch_size",
            "8",
        ]
    )
    assert rc == 0
    rows = (study / "study.csv").read_text().splitlines()
    assert len(rows) == 3 and rows[0].startswith("run,method")
    used = {
        json.loads((study / f"runs/finetune_cot_d{d}_f1_tiny/results.json").read_text())["methods"][
            f"finetune_cot:{d}"
        ]["rationales_used"]
        for d in (1, 10)
    }
    assert len(used) == 2 and max(used) > min(used)  # D = 10 trains on more rationales
    assert (study / "accuracy_vs_degree.png").exists()
    assert "| finetune_cot_d10_f1_tiny |" in capsys.readouterr().out
