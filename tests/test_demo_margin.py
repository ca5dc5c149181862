"""The demo's claim, measured: on the compass task, Sci-CoT two-stage beats plain fine-tuning.

A real run (oracle teacher over loopback, tiny T5 from scratch, CPU), seeded, on a user card
(the shipped card at 4 turns, given by path). Takes a few minutes.
"""

from pathlib import Path

import pytest

from scicot_jax.data.cards import CARDS_DIR
from scicot_jax.pipeline.config import PipelineConfig, StudentConfig, TeacherConfig
from scicot_jax.pipeline.run import run_pipeline


@pytest.mark.slow  # minutes: two full pipeline methods, 900 training steps
def test_two_stage_beats_plain_fine_tuning(tmp_path):
    card = tmp_path / "compass4.toml"
    card.write_text(
        (CARDS_DIR / "synthetic_compass.toml")
        .read_text()
        .replace('name = "synthetic_compass"', 'name = "compass4"')
        .replace("difficulty = 5", "difficulty = 4")  # 4096 questions in all
        .replace(
            "train = 2000, validation = 200, test = 500",
            "train = 1000, validation = 100, test = 200",
        )
    )
    cfg = PipelineConfig(
        task=str(card),
        out=str(tmp_path / "run"),
        methods=("baseline", "scicot:1"),
        teacher=TeacherConfig(backend="oracle", model="oracle"),
        student=StudentConfig(
            size="tiny", steps=600, stage2_steps=300, batch_size=32, learning_rate=3e-3
        ),
    )
    res = run_pipeline(cfg)
    baseline = res["methods"]["baseline"]["accuracy"]["test"]
    two_stage = res["methods"]["scicot:1"]["accuracy"]["test"]
    assert two_stage >= baseline + 30, (baseline, two_stage)  # accuracies in percent
    assert (Path(cfg.out) / "results.md").is_file()
