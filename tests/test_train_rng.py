"""Dropout key implementation option: validated at config time, deterministic per (seed, step)."""

from __future__ import annotations

import jax
import numpy as np
import pytest

from scicot_jax.train.step import DEFAULT_DROPOUT_RNG_IMPL, DROPOUT_RNG_IMPLS, check_rng_impl
from scicot_jax.train.trainer import TrainConfig


def test_default_is_rbg_and_bad_names_fail_early():
    assert TrainConfig("/tmp/x", 1).dropout_rng_impl == DEFAULT_DROPOUT_RNG_IMPL == "rbg"
    for name in DROPOUT_RNG_IMPLS:
        assert check_rng_impl(name) == name
    with pytest.raises(ValueError, match="dropout_rng_impl='philox'"):
        TrainConfig("/tmp/x", 1, dropout_rng_impl="philox")


@pytest.mark.parametrize("impl", DROPOUT_RNG_IMPLS)
def test_step_keys_are_deterministic(impl: str):
    @jax.jit
    def mask(step):
        key = jax.random.fold_in(jax.random.key(0, impl=impl), step)
        return jax.random.bernoulli(key, 0.9, (64,))

    np.testing.assert_array_equal(mask(3), mask(3))
    assert not np.array_equal(mask(3), mask(4))
