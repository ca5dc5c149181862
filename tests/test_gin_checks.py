"""Gin values a binary cannot use: one GinValueError naming the binding, raised before `run`."""

from __future__ import annotations

import pytest

import gin
from scicot_jax.runtime import gin_checks, gin_utils

TRAIN_FILES = ["models/tiny.gin", "runs/finetune.gin"]
GOOD = ["MODEL_DIR = '/tmp/never_created'", "MIXTURE_OR_TASK_NAME = 'scicot:x'"]


def _train_error(*bindings: str, base=GOOD) -> str:
    """The error the train binary's gin checks raise for these bindings ('' when accepted)."""
    from scicot_jax.train import cli

    try:
        gin_utils.parse_gin(TRAIN_FILES, [*base, *bindings])
        gin_checks.check_config(cli.run)
        return ""
    except gin_checks.GinValueError as e:
        return str(e)
    finally:
        gin.clear_config()


@pytest.mark.parametrize(
    ("binding", "expected"),
    [
        ("BATCH_SIZE = 'eight'", "BATCH_SIZE: expected int, got 'eight'"),
        ("TRAIN_STEPS = 'x'", "TRAIN_STEPS: expected int, got 'x'"),
        ("TASK_FEATURE_LENGTHS = 64", "TASK_FEATURE_LENGTHS: expected dict, got 64"),
        ("TASK_FEATURE_LENGTHS = {'inputs': 0}", "TASK_FEATURE_LENGTHS: expected a dict of pos"),
        ("CHECKPOINT_PERIOD = 0", "CHECKPOINT_PERIOD: expected an int > 0, got 0"),
        ("CHECKPOINT_PERIOD = -5", "CHECKPOINT_PERIOD: expected an int > 0, got -5"),
        ("EVAL_PERIOD = -1", "EVAL_PERIOD: expected an int >= 0, got -1"),
        ("LEARNING_RATE = 'fast'", "LEARNING_RATE: expected float, got 'fast'"),
        ("USE_HARDWARE_RNG = 3", "USE_HARDWARE_RNG: expected bool, got 3"),
        ("train.stats_period = 0", "train.stats_period: expected an int > 0, got 0"),
        ("CheckpointConfig.keep = 0", "CheckpointConfig.keep: expected an int > 0, got 0"),
        ("T5Config.d_model = 6.5", "T5Config.d_model: expected int, got 6.5"),
        ("train.train_dataset_cfg = 5", "train.train_dataset_cfg: expected DatasetConfig, got 5"),
        (
            "train.checkpoint_cfg = 5",
            "train.checkpoint_cfg: expected CheckpointConfig or None, got 5",
        ),
    ],
)
def test_wrong_value_is_named(binding, expected):
    assert _train_error(binding).startswith(expected)


@pytest.mark.parametrize(
    ("old", "new"),
    [
        ("train.log_period = 1", "train.stats_period"),
        ("train.train_steps = 5", "train.total_steps"),
        ("train.checkpoint_period = 5", "CheckpointConfig.period"),
        ("train.model_parallel = 2", "PartitioningConfig.model_parallel"),
    ],
)
def test_old_train_parameter_names_its_new_binding(old, new, tmp_path):
    """A parameter that moved is one line naming where it went, from a flag or a gin file."""
    name = old.split(" =")[0]
    assert _train_error(old) == f"gin binding {old!r}: {name} is now {new}"
    path = tmp_path / "old.gin"
    path.write_text(f"{old}\n")
    try:
        with pytest.raises(gin_checks.GinValueError) as e:
            gin_utils.parse_gin([*TRAIN_FILES, str(path)], GOOD)
    finally:
        gin.clear_config()
    assert str(e.value).startswith(f"gin file {path}: {name} is now {new} (")
    assert "\n" not in str(e.value)


def test_missing_required_macro_is_named():
    err = _train_error(base=["MODEL_DIR = '/tmp/never_created'"])
    assert err == "MIXTURE_OR_TASK_NAME is required: set it, e.g. --gin.MIXTURE_OR_TASK_NAME=..."


@pytest.mark.parametrize("binding", ["TRAIN_STEPS = ((", "BATCH_SIZE = [1,", "= 3", "A B = 1"])
def test_unparsable_binding_is_named(binding):
    err = _train_error(binding)
    assert err.startswith(f"gin binding {binding!r} cannot be parsed: "), err
    assert "\n" not in err


def test_good_config_passes():
    assert (
        _train_error("BATCH_SIZE = 4", "TASK_FEATURE_LENGTHS = {'inputs': 8, 'targets': 4}") == ""
    )
