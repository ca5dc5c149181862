"""t5x checkpoints in and out: the legacy msgpack + tensorstore layout (bf16 and fp32 stores,
inline and zarr leaves) and t5x's orbax layout load bitwise; the step and Adafactor state are
restored with t5x's semantics; orbax-to-t5x round-trips; unknown directories are one error."""

from __future__ import annotations

import jax
import numpy as np
import pytest
from model_fixtures import enable_compile_cache, tiny_config
from t5x_layout import (
    bf16,
    flatten,
    t5x_adafactor_states,
    write_legacy_t5x,
    write_orbax_t5x,
)
from test_checkpoints import _cfg
from train_toy import toy_batches

from scicot_jax.checkpoints import init_from, t5x
from scicot_jax.model import init_params, logical_axes, param_shapes
from scicot_jax.runtime import inference, partitioning
from scicot_jax.train.optimizers import OptimizerConfig
from scicot_jax.train.trainer import TrainConfig, train

STEP = 7
MIN_DIM = 8


@pytest.fixture(scope="module", autouse=True)
def _cache(tmp_path_factory):
    enable_compile_cache(tmp_path_factory.mktemp("jax_cache"))


def _params(config, seed=0) -> dict:
    return jax.tree.map(np.asarray, init_params(config, jax.random.key(seed)))


def _stored(params: dict) -> dict:
    """What the test stores: embeddings and MLP kernels in bf16, the rest fp32 (t5x allows both)."""
    return {
        "/".join(k): (bf16(v) if k[-2] in ("token_embedder", "wi_0", "wo") else v)
        for k, v in flatten(params)
    }


def _load(path, config):
    mesh = partitioning.make_mesh()
    abstract = param_shapes(config)
    sh = partitioning.params_shardings(logical_axes(config), abstract, mesh)
    return init_from.load_initial_params(path, abstract, sh, config)


def _assert_params_equal(loaded, stored: dict) -> None:
    got = {"/".join(k): np.asarray(v) for k, v in flatten(jax.device_get(loaded))}
    assert got.keys() == stored.keys()
    for k, want in stored.items():
        np.testing.assert_array_equal(got[k], want.astype(np.float32), err_msg=k)


def _tree(config, params, *, step=STEP, with_states=True) -> dict:
    state = {"step": np.asarray(step, np.int32)}
    if with_states:
        state["param_states"] = t5x_adafactor_states(params, MIN_DIM)
    return {"target": params, "state": state}


@pytest.mark.parametrize("layout", ["legacy", "orbax"])
def test_t5x_checkpoint_params_load_bitwise(tmp_path, layout):
    config = tiny_config()
    stored = _stored(_params(config))
    nested = dict(flatten_to_nested(stored))
    step_dir = tmp_path / f"checkpoint_{STEP}"
    (write_legacy_t5x if layout == "legacy" else write_orbax_t5x)(step_dir, _tree(config, nested))
    want_fmt = t5x.LEGACY if layout == "legacy" else t5x.ORBAX
    for path in (step_dir, tmp_path):  # the step dir, or the model dir (latest step)
        assert init_from.detect_format(path) == want_fmt
        _assert_params_equal(_load(path, config), stored)
    raw = t5x.read(step_dir, optimizer=False)
    assert raw.step == STEP and raw.param_states is None
    assert raw.params["token_embedder"]["embedding"].dtype == bf16(0).dtype  # as stored
    # t5x stores no model config: eval/infer infer it from the parameter shapes.
    assert inference.checkpoint_config(step_dir) == config


def flatten_to_nested(flat: dict):
    out: dict = {}
    for k, v in flat.items():
        node = out
        *parents, last = k.split("/")
        for p in parents:
            node = node.setdefault(p, {})
        node[last] = v
    return out.items()


def test_unknown_directory_is_one_clear_error(tmp_path):
    with pytest.raises(ValueError, match="not a checkpoint in any known format.*empty directory"):
        init_from.detect_format(tmp_path)
    (tmp_path / "notes.txt").write_text("x")
    with pytest.raises(ValueError, match=r"found \['notes.txt'\]"):
        _load(tmp_path, tiny_config())
    bad = tmp_path / "checkpoint_3"
    bad.mkdir()
    (bad / "checkpoint").write_bytes(b"\x81\xa1a\x01")  # msgpack {"a": 1}
    with pytest.raises(ValueError, match=r"checkpoint_3/checkpoint: no 'optimizer' key"):
        _load(bad, tiny_config())


def _train_cfg(model_dir, steps, init, **kw) -> TrainConfig:
    init = str(init) if init else None
    return _cfg(model_dir, steps, **{"period": 100, "initial_path": init, **kw})


def _second_moment(vr, vc, v, shape):
    """The Adafactor preconditioner V in parameter index order. t5x and optax factor 2-D params
    alike: v_row averages over the largest dim d0 (the last on ties), v_col over the other."""
    vr, vc, v = np.asarray(vr), np.asarray(vc), np.asarray(v)
    if v.shape == tuple(shape):
        return v
    d0 = int(np.argsort(shape)[-1])
    by_dim = {1 - d0: vr, d0: vc}
    return np.outer(by_dim[0], by_dim[1]) / vr.mean()


@pytest.mark.slow
def test_t5x_restore_semantics_step_and_adafactor_state(tmp_path):
    """From checkpoint_7, TRAIN_STEPS=7 trains nothing and holds t5x's state; TRAIN_STEPS=9 trains
    2 steps; the params-only switch restarts at step 0."""
    import optax

    config = tiny_config()
    params = _params(config)
    tree = _tree(config, params)
    init = tmp_path / f"checkpoint_{STEP}"
    write_legacy_t5x(init, tree)
    batches = lambda start: toy_batches()  # noqa: E731

    held = train(_train_cfg(tmp_path / "a", STEP, init), batches, return_state=True)
    assert held.step == STEP and int(held.state.step) == STEP
    factored = next(s for s in held.state.opt_state if isinstance(s, optax.FactoredState))
    assert int(factored.count) == STEP
    states = tree["state"]["param_states"]
    rows = dict(flatten(jax.device_get(factored.v_row)))
    cols = dict(flatten(jax.device_get(factored.v_col)))
    vs = dict(flatten(jax.device_get(factored.v)))
    n_factored = 0
    for key, p in flatten(params):
        s = dict(flatten({"s": _lookup(states, key)}))
        s = {k[-1]: v for k, v in s.items()}
        want = _second_moment(s["v_row"], s["v_col"], s["v"], p.shape)
        got = _second_moment(rows[key], cols[key], vs[key], p.shape)
        np.testing.assert_allclose(got, want, rtol=1e-6, err_msg="/".join(key))
        n_factored += vs[key].shape == (1,)
    assert n_factored >= 8  # square and non-square kernels were factored both ways

    more = train(_train_cfg(tmp_path / "b", STEP + 2, init), batches, return_state=True)
    assert more.step == STEP + 2 and not more.preempted

    fresh = train(
        _train_cfg(tmp_path / "c", 2, init, initial_params_only=True), batches, return_state=True
    )
    assert fresh.step == 2
    factored = next(s for s in fresh.state.opt_state if isinstance(s, optax.FactoredState))
    assert int(factored.count) == 2


def _lookup(tree, key):
    for k in key:
        tree = tree[k]
    return tree


@pytest.mark.slow
def test_orbax_to_t5x_round_trips_params_step_and_adafactor(tmp_path):
    """A trainer checkpoint -> t5x legacy layout (as t5x's Checkpointer writes it) -> our reader
    and back into optax: params bitwise, the step, and the same preconditioner."""
    import optax

    from scicot_jax.checkpoints import convert

    model_dir = tmp_path / "model"
    cfg = _train_cfg(model_dir, 3, None, period=3)
    trained = train(cfg, lambda start: toy_batches(), return_state=True)
    out = convert.to_t5x(model_dir, tmp_path / "t5x")
    assert out.name == "checkpoint_3" and (out / "checkpoint").exists()
    assert (out / "target.encoder.layers_0.mlp.wi_0.kernel" / ".zarray").exists()
    back = t5x.read(tmp_path / "t5x")
    assert back.step == 3
    want_params = jax.device_get(trained.state.params)
    for key, v in flatten(want_params):
        np.testing.assert_array_equal(_lookup(back.params, key), np.asarray(v))
    # Into optax again (as a fine-tune from it would): the same state as trained.
    again = train(
        _train_cfg(tmp_path / "again", 3, out), lambda s: toy_batches(), return_state=True
    )
    f1 = next(s for s in trained.state.opt_state if isinstance(s, optax.FactoredState))
    f2 = next(s for s in again.state.opt_state if isinstance(s, optax.FactoredState))
    for a, b in zip(jax.tree.leaves(jax.device_get(f1)), jax.tree.leaves(jax.device_get(f2))):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    bf = convert.to_t5x(model_dir, tmp_path / "bf16" / "checkpoint_3", dtype="bfloat16")
    emb = t5x.read(bf, optimizer=False).params["token_embedder"]["embedding"]
    assert emb.dtype == bf16(0).dtype


def test_other_optimizer_keeps_params_and_step_and_says_so(tmp_path, caplog):
    """AdamW cannot take t5x's Adafactor state: params and step restored, optimizer fresh."""
    import logging

    config = tiny_config()
    params = _params(config)
    init = tmp_path / f"checkpoint_{STEP}"
    write_legacy_t5x(init, _tree(config, params))
    cfg = _train_cfg(tmp_path / "m", STEP, init, optimizer=OptimizerConfig(name="adamw"))
    with caplog.at_level(logging.WARNING):
        res = train(cfg, lambda start: toy_batches(), return_state=True)
    assert res.step == STEP
    assert "optimizer state not restored" in caplog.text and "ScaleByAdamState" in caplog.text
    got = jax.device_get(res.state.params)["encoder"]["layers_0"]["mlp"]["wi_0"]["kernel"]
    np.testing.assert_array_equal(got, params["encoder"]["layers_0"]["mlp"]["wi_0"]["kernel"])
