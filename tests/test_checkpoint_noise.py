"""Loading a checkpoint logs no warning about orbax metadata that item directories never hold."""

from __future__ import annotations

import logging

import jax.numpy as jnp

from scicot_jax.checkpoints import params_io
from scicot_jax.checkpoints.orbax import Checkpoints, restore_item


def test_checkpoint_loads_are_quiet(tmp_path, caplog):
    params, opt = {"w": jnp.ones((2, 3))}, {"m": jnp.zeros((2,))}
    ck = Checkpoints(tmp_path, async_save=False)
    ck.save(1, params, opt, {"pos": 1}, {})
    ck.manager.wait_until_finished()
    caplog.set_level(logging.WARNING)
    step, got, *_ = Checkpoints(tmp_path, async_save=False).restore_latest(params, opt)
    params_io.restore_tree(tmp_path / "checkpoints/1/params")
    restore_item(tmp_path / "checkpoints/1", "opt_state", opt)
    assert step == 1 and float(got["w"].sum()) == 6.0
    noise = [r.getMessage() for r in caplog.records if "Metadata file" in r.getMessage()]
    assert noise == []
