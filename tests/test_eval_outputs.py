"""The eval binary's outputs: nothing written for a missing checkpoint, one line per step."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from test_binaries import ROOT

from scicot_jax.runtime import task_eval


def test_eval_rerun_replaces_the_steps_metrics_line(tmp_path):
    rows = [{"task": "t", "input": "", "target": "", "prediction": "", "score": 0.0}]
    rows = [dict(rows[0], split="s", parsed="", gold="", correct=True)]
    for step, acc in ((2, 50.0), (4, 60.0), (2, 55.0)):  # step 2 evaluated again
        task_eval.write_t5x_outputs(tmp_path, step, {"t/accuracy": acc}, rows)
    lines = [json.loads(x) for x in (tmp_path / "t-metrics.jsonl").read_text().splitlines()]
    assert lines == [{"step": 4, "accuracy": 60.0}, {"step": 2, "accuracy": 55.0}]


def test_eval_of_a_missing_checkpoint_is_one_line_and_writes_nothing(tmp_path):
    missing = tmp_path / "model" / "checkpoints" / "5"
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "scicot_jax.eval",
            "--gin_file=runs/eval.gin",
            f"--gin.CHECKPOINT_PATH={missing}",
            "--gin.MIXTURE_OR_TASK_NAME=scicot:synthetic_coin_flip:baseline",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        env=dict(os.environ, JAX_PLATFORMS="cpu"),
    )
    assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr[-3000:]
    errors = [x for x in r.stderr.splitlines() if x.startswith("scicot-eval: error:")]
    assert len(errors) == 1 and str(missing) in errors[0], r.stderr[-3000:]
    assert not (tmp_path / "model").exists()
