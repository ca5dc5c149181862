"""The train binary's expected failures: one stderr line, a documented exit code, no traceback,
and nothing created in MODEL_DIR before the configuration is known to be good."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from test_binaries import ROOT
from test_binaries import TINY as MODEL_FLAGS

from scicot_jax.runtime import gin_utils
from scicot_jax.train.trainer import TrainResult

TINY = [
    *MODEL_FLAGS,
    "--gin_file=runs/finetune.gin",
    "--gin.TASK_FEATURE_LENGTHS={'inputs': 64, 'targets': 8}",
    "--gin.TRAIN_STEPS=2",
    "--gin.BATCH_SIZE=4",
]


def _train(*flags: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "scicot_jax.train", *TINY, *flags],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        env=dict(os.environ, JAX_PLATFORMS="cpu"),
    )


def _one_line_error(r: subprocess.CompletedProcess, code: int, *words: str) -> None:
    assert r.returncode == code, (r.returncode, r.stderr[-3000:])
    assert "Traceback" not in r.stderr, r.stderr[-3000:]
    errors = [x for x in r.stderr.splitlines() if x.startswith("scicot-train: error:")]
    assert len(errors) == 1, r.stderr[-3000:]
    for w in words:
        assert w in errors[0], errors[0]


@pytest.mark.slow  # a train binary subprocess (imports TensorFlow for SeqIO): ~40 s
def test_unknown_task_is_one_line_and_creates_nothing(tmp_path, tiny_vocab_path):
    model_dir = tmp_path / "model"
    r = _train(f"--gin.MODEL_DIR={model_dir}", "--gin.MIXTURE_OR_TASK_NAME=scicot:no_such_task")
    _one_line_error(r, 2, "unknown SeqIO task", "scicot:no_such_task")
    assert not model_dir.exists()


@pytest.mark.slow  # a train binary subprocess (imports TensorFlow for SeqIO): ~40 s
def test_empty_initial_checkpoint_dir_is_one_line(tmp_path, tiny_vocab_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    r = _train(
        f"--gin.MODEL_DIR={tmp_path / 'model'}",
        "--gin.MIXTURE_OR_TASK_NAME=scicot:synthetic_coin_flip:baseline",
        f"--gin.INITIAL_CHECKPOINT_PATH='{empty}'",
    )
    _one_line_error(r, 2, str(empty), "not a checkpoint in any known format")


@pytest.mark.parametrize(("preempted", "code"), [(True, 75), (False, 0)])
def test_preempted_run_exits_with_the_documented_code(monkeypatch, preempted, code):
    result = TrainResult(3, preempted, {}, {}, "/x")
    monkeypatch.setattr(sys, "argv", ["scicot-train"])
    with pytest.raises(SystemExit) as e:
        gin_utils.console_main(lambda argv: result, "scicot-train")
    assert e.value.code == code


@pytest.mark.parametrize("binary", ["eval", "infer"])
def test_model_gin_that_disagrees_with_the_checkpoint_is_one_error(tmp_path, binary):
    """t5x's eval/infer command lines carry the model gin; ours use it, and a size that is not
    the checkpoint's is one error naming the field (here a t5x checkpoint, d_model 16 vs 64)."""
    import jax
    import numpy as np
    from model_fixtures import tiny_config

    from scicot_jax import eval as eval_bin
    from scicot_jax import infer
    from scicot_jax.checkpoints import t5x
    from scicot_jax.model import init_params

    config = tiny_config()
    params = jax.tree.map(np.asarray, init_params(config, jax.random.key(0)))
    step_dir = t5x.write_legacy(tmp_path / "checkpoint_5", params, 5)
    argv = [
        binary,
        "--gin_file=models/tiny.gin",
        f"--gin_file=runs/{binary}.gin",
        f"--gin.VOCAB_SIZE={config.vocab_size}",
        f"--gin.CHECKPOINT_PATH={step_dir}",
        "--gin.MIXTURE_OR_TASK_NAME='scicot:synthetic_coin_flip:baseline'",
    ]
    if binary == "infer":
        argv.append(f"--gin.INFER_OUTPUT_DIR={tmp_path / 'out'}")
    main = eval_bin.main if binary == "eval" else infer.main
    with pytest.raises(
        ValueError, match=r"model gin sets T5Config.d_model = 64 but the checkpoint"
    ):
        main(argv)
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    ("flags", "words"),
    [
        (["--gin.BATCH_SIZE='eight'"], ["BATCH_SIZE: expected int, got 'eight'"]),
        (["--gin.TRAIN_STEPS=(("], ["gin binding 'TRAIN_STEPS = ((' cannot be parsed"]),
        (["--gin.TASK_FEATURE_LENGTHS=64"], ["TASK_FEATURE_LENGTHS: expected dict, got 64"]),
        (["--gin.CHECKPOINT_PERIOD=0"], ["CHECKPOINT_PERIOD: expected an int > 0, got 0"]),
        (["--gin.TRAIN_STEPS=x"], ["TRAIN_STEPS: expected int, got 'x'"]),
        ([], ["MIXTURE_OR_TASK_NAME is required"]),  # no task given
    ],
)
def test_bad_gin_value_is_one_line_naming_it_and_creates_nothing(tmp_path, flags, words):
    """Checked before the task is read: ~8 s a case (no TensorFlow import)."""
    model_dir = tmp_path / "model"
    task = [] if not flags else ["--gin.MIXTURE_OR_TASK_NAME=scicot:synthetic_coin_flip:baseline"]
    r = _train(f"--gin.MODEL_DIR={model_dir}", *task, *flags)
    _one_line_error(r, 2, *words)
    assert not model_dir.exists()
