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
        ("train.log_period = 0", "train.log_period: expected an int > 0, got 0"),
        ("T5Config.d_model = 6.5", "T5Config.d_model: expected int, got 6.5"),
        ("train.train_dataset = 5", "train.train_dataset: expected DatasetConfig, got 5"),
    ],
)
def test_wrong_value_is_named(binding, expected):
    assert _train_error(binding).startswith(expected)


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
