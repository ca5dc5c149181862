"""Checkpoints and faults: SIGTERM resume is bitwise exact, corrupt steps are skipped, NaN stops
the run without saving, initial checkpoints load from ours, save_params dirs and HF exports."""

from __future__ import annotations

import dataclasses
import logging
import os
import signal
from pathlib import Path

import jax
import numpy as np
import pytest
from model_fixtures import enable_compile_cache, tiny_config
from train_toy import toy_batches, toy_spec

from scicot_jax.checkpoints.orbax import Checkpoints
from scicot_jax.train.configs import CheckpointConfig
from scicot_jax.train.optimizers import OptimizerConfig
from scicot_jax.train.trainer import NonFiniteLossError, TrainConfig, train


@pytest.fixture(scope="module", autouse=True)
def _cache(tmp_path_factory):
    enable_compile_cache(tmp_path_factory.mktemp("jax_cache"))


def _cfg(model_dir: Path, steps: int, **kw) -> TrainConfig:
    """A tiny run's config; CheckpointConfig's fields (period, initial_path, ...) among `kw`."""
    names = {f.name for f in dataclasses.fields(CheckpointConfig)}
    checkpoint = CheckpointConfig(**{"period": 4, **{k: kw.pop(k) for k in names & set(kw)}})
    base = dict(
        model_dir=str(model_dir),
        train_steps=steps,
        checkpoint=checkpoint,
        log_period=4,
        model=tiny_config(dropout_rate=0.1),
        feature_lengths={"inputs": 6, "targets": 5},
        optimizer=OptimizerConfig(learning_rate=1e-2, min_dim_size_to_factor=8),
    )
    base.update(kw)
    return TrainConfig(**base)


def _params(result) -> list[np.ndarray]:
    return [np.asarray(x) for x in jax.tree.leaves(jax.device_get(result.state.params))]


def _sigterm_at(n: int):
    """Batches that deliver SIGTERM to this process when batch n is read (like a preemption)."""
    for i, b in enumerate(toy_batches()):
        if i == n:
            os.kill(os.getpid(), signal.SIGTERM)
        yield b


def test_sigterm_then_resume_is_bitwise_equal(tmp_path):
    ref = train(
        _cfg(tmp_path / "ref", 10), lambda start: _skip(toy_batches(), start), return_state=True
    )
    handler = signal.getsignal(signal.SIGTERM)
    first = train(
        _cfg(tmp_path / "run", 10), lambda start: _skip(_sigterm_at(6), start), return_state=True
    )
    assert first.preempted and 1 <= first.step < 10, first.step  # prefetch reads ahead
    assert signal.getsignal(signal.SIGTERM) is handler  # the trainer's handler is removed
    assert Checkpoints(tmp_path / "run").latest_step() == first.step
    second = train(
        _cfg(tmp_path / "run", 10), lambda start: _skip(toy_batches(), start), return_state=True
    )
    assert second.step == 10 and not second.preempted
    for a, b in zip(_params(second), _params(ref)):
        np.testing.assert_array_equal(a, b)


def _skip(it, n):
    for i, b in enumerate(it):
        if i >= n:
            yield b


def test_corrupt_latest_checkpoint_falls_back(tmp_path, caplog):
    train(_cfg(tmp_path, 8), toy_batches())
    ck = Checkpoints(tmp_path)
    assert ck.all_steps() == [4, 8]
    ck.close()
    for f in (tmp_path / "checkpoints" / "8" / "params").rglob("*"):
        if f.is_file() and f.stat().st_size > 0 and "ocdbt" not in f.name:
            f.write_bytes(b"\0garbage")  # truncate/overwrite the array data
    with caplog.at_level(logging.WARNING):
        res = train(_cfg(tmp_path, 8), toy_batches(), return_state=True)
    assert "unreadable" in caplog.text
    assert res.step == 8  # resumed from 4, retrained 4..8, saved a fresh step 8
    assert list((tmp_path / "checkpoints").glob("8.corrupt-*"))
    assert Checkpoints(tmp_path).all_steps() == [4, 8]


def test_nan_loss_stops_and_keeps_good_checkpoint(tmp_path):
    spec = toy_spec(0.0)
    poisoned = spec.__class__(
        apply=lambda p, b, r, t: spec.apply(p, b, r, t) * b["poison"][0],
        init=spec.init,
        logical_axes=spec.logical_axes,
    )

    def batches():
        for i, b in enumerate(toy_batches()):
            yield dict(b, poison=np.full((8,), np.nan if i == 5 else 1.0, np.float32))

    cfg = _cfg(tmp_path, 12, period=4, log_period=100)
    with pytest.raises(NonFiniteLossError, match="at step 6.*Last good checkpoint: .*/4"):
        train(cfg, batches(), model_spec=poisoned)
    assert Checkpoints(tmp_path).all_steps() == [4]


def test_initial_checkpoint_from_trainer_save_params_and_hf(tmp_path):
    from scicot_jax.checkpoints.hf import export_hf
    from scicot_jax.checkpoints.params_io import save_params

    src = train(_cfg(tmp_path / "a", 4, period=2), toy_batches(), return_state=True)
    want = _params(src)
    cfg = tiny_config(dropout_rate=0.1)
    host = jax.device_get(src.state.params)
    save_params(tmp_path / "saved", host, cfg)
    export_hf(cfg, host, tmp_path / "hf")
    for name, path in (
        ("trainer step", tmp_path / "a" / "checkpoints" / "4"),
        ("trainer dir", tmp_path / "a"),
        ("save_params", tmp_path / "saved"),
        ("hf", tmp_path / "hf"),
    ):
        res = train(
            _cfg(tmp_path / f"b_{name}", 0, initial_path=str(path)),
            toy_batches(),
            return_state=True,
        )
        for a, b in zip(_params(res), want):
            np.testing.assert_allclose(a, b, rtol=1e-6, err_msg=name)
    # A per-layer checkpoint initializes a scan-over-layers model (stacked params).
    from scicot_jax.model import unscan_params

    scanned = tiny_config(dropout_rate=0.1, scan_layers=True, remat_policy="full")
    res = train(
        _cfg(tmp_path / "scan", 0, model=scanned, initial_path=str(tmp_path / "saved")),
        toy_batches(),
        return_state=True,
    )
    assert "layers" in res.state.params["encoder"]
    back = unscan_params(jax.device_get(res.state.params), scanned)
    for a, b in zip(jax.tree.leaves(back), want):
        np.testing.assert_array_equal(np.asarray(a), b)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        train(_cfg(tmp_path / "c", 1, initial_path=str(tmp_path / "nope")), toy_batches())


def test_finite_data_stops_early_and_saves_last_step(tmp_path, caplog):
    import itertools

    with caplog.at_level(logging.WARNING):
        res = train(_cfg(tmp_path, 10), itertools.islice(toy_batches(), 6), model_spec=toy_spec())
    assert res.step == 6 and "data exhausted at step 6" in caplog.text
    assert Checkpoints(tmp_path).all_steps() == [4, 6]
