"""t5x Adafactor state <-> optax, held against a reference real t5x computed
(tests/data/README.md): the next step from t5x's state equals t5x's on square, tall and wide
kernels and on unfactored params, both directions; scanned params map to t5x's per-layer states;
orbax-to-t5x writes the factored statistics and the step inline, as t5x does."""

from __future__ import annotations

from pathlib import Path

import jax
import numpy as np
import optax
import pytest
from t5x_layout import flatten, nest, t5x_adafactor_states, t5x_inline

from scicot_jax.checkpoints import t5x, t5x_adafactor
from scicot_jax.model import T5Config, logical_axes
from scicot_jax.train.optimizers import OptimizerConfig, make_optimizer

REFERENCE = Path(__file__).parent / "data" / "t5x_adafactor_reference.npz"


def _reference() -> dict:
    """{param path: {shape, v_row, v_col, v, m, index, next, next_v_row, ...}} and the globals."""
    raw = np.load(REFERENCE)
    out: dict = {}
    for k in raw.files:
        if "|" in k:
            path, field = k.split("|")
            out.setdefault(path, {})[field] = raw[k]
    return out, int(raw["step"]), float(raw["learning_rate"])


def _inputs(i: int, shape: tuple):
    """tools/verify_t5x.py's reference_inputs: the param and gradient t5x stepped from."""
    rng = np.random.default_rng(i)
    param = (rng.standard_normal(shape) * 0.05).astype(np.float32)
    grad = (rng.standard_normal(shape) * 0.01).astype(np.float32)
    return param, grad


def test_next_step_from_t5x_state_equals_t5x():
    ref, step, lr = _reference()
    opt, _ = make_optimizer(OptimizerConfig(learning_rate=lr))
    config = T5Config(
        vocab_size=384,
        d_model=128,
        num_heads=4,
        d_kv=32,
        d_ff=256,
        num_encoder_layers=2,
        num_decoder_layers=2,
    )  # the size the reference was made at; its logical axes go along, as the trainer's do
    axes = {"/".join(k): v for k, v in _axes(logical_axes(config)).items()}
    for i, (path, r) in enumerate(ref.items()):
        key = tuple(path.split("/"))
        shape = tuple(int(d) for d in r["shape"])
        param, grad = _inputs(i, shape)
        params, grads = nest([(key, param)]), nest([(key, grad)])
        slots = {s: r[s] for s in ("v_row", "v_col", "v", "m")}
        abstract = jax.eval_shape(opt.init, params)
        spec = nest([(key, axes[path])])
        state = t5x_adafactor.from_t5x(abstract, nest([(key, slots)]), step, params, spec)
        updates, new_state = opt.update(grads, state, params)
        got = np.asarray(dict(flatten(optax.apply_updates(params, updates)))[key])
        np.testing.assert_allclose(
            got.reshape(-1)[r["index"]], r["next"], rtol=2e-5, atol=1e-8, err_msg=path
        )
        back = dict(flatten(t5x_adafactor.to_t5x(new_state, params, spec)))
        for s in ("v_row", "v_col", "v"):  # optax -> t5x: t5x's own next state
            np.testing.assert_allclose(
                back[(*key, s)], r[f"next_{s}"], rtol=2e-5, err_msg=f"{path} {s}"
            )
    square = ref["encoder/layers_0/attention/out/kernel"]
    assert square["v_row"].shape == square["v_col"].shape == (128,)  # the case that was swapped


def _axes(tree) -> dict:
    flat = jax.tree_util.tree_flatten_with_path(
        tree, is_leaf=lambda x: isinstance(x, jax.sharding.PartitionSpec)
    )[0]
    return {tuple(k.key for k in kp): v for kp, v in flat}


def test_factoring_rule_by_rank():
    dims = t5x_adafactor.t5x_factored_dims
    # Rank <= 2: t5x's rules are ignored, the shape heuristic (optax's) decides; ties: last dim.
    assert dims((128, 128), ("joined_kv", "embed")) == ((0,), (1,))
    assert dims((128, 256), ("embed", "mlp")) == ((0,), (1,))
    assert dims((256, 128), ("mlp", "embed")) == ((1,), (0,))
    assert dims((128, 64), ("embed", "mlp")) is None  # below min_dim_size_to_factor
    assert dims((128,), ("embed",)) is None
    # Higher ranks (and batch axes): the logical factor rules; `embed` is the row.
    assert dims((2, 128, 128), ("layers", "joined_kv", "embed")) == ((2,), (1,))
    assert dims((2, 64, 8), ("layers", "embed", "mlp")) == ((1,), (2,))  # no min_dim here
    assert dims((2, 128), ("layers", "embed")) is None
    assert dims((128, 4, 32), ("embed", "heads", "kv")) == ((0,), (1, 2))
    with pytest.raises(t5x_adafactor.OptimizerMismatch, match="logical axes"):
        dims((2, 128, 128))


def _kernels() -> dict:
    """Per-layer params with square, tall and wide kernels and a vector, 2 layers per stack."""
    rng = np.random.default_rng(0)
    layer = {"out": (16, 16), "wi": (16, 32), "wo": (32, 16), "scale": (16,)}
    tree: dict = {}
    for stack in ("encoder", "decoder"):
        tree[stack] = {
            f"layers_{i}": {k: rng.normal(size=s).astype(np.float32) for k, s in layer.items()}
            for i in range(2)
        }
    tree["embedding"] = rng.normal(size=(40, 16)).astype(np.float32)
    return tree


def _kernel_axes(tree: dict, scanned: bool) -> dict:
    """The logical axes the model gives these params (scanned ones lead with `layers`)."""
    names = {"out": ("joined_kv", "embed"), "wi": ("embed", "mlp"), "wo": ("mlp", "embed")}
    names |= {"scale": ("embed",), "embedding": ("vocab", "embed")}
    P = jax.sharding.PartitionSpec  # noqa: N806
    return nest(
        (k, P(*(("layers",) if scanned and k[1:2] == ("layers",) else ()), *names[k[-1]]))
        for k, _ in flatten(tree)
    )


def _scanned(tree: dict) -> dict:
    out = dict(tree)
    for stack in ("encoder", "decoder"):
        layers = [tree[stack][f"layers_{i}"] for i in range(2)]
        out[stack] = {"layers": jax.tree.map(lambda *xs: np.stack(xs), *layers)}
    return out


@pytest.mark.parametrize("scanned", [False, True])
def test_t5x_states_round_trip_per_layer_and_scanned(scanned):
    """t5x's per-layer states -> optax (per layer or stacked) -> t5x again, exactly; in optax the
    preconditioner of each layer is t5x's (square kernels not transposed)."""
    per_layer = _kernels()
    states = t5x_adafactor_states(per_layer, min_dim=16, seed=1)
    params = _scanned(per_layer) if scanned else per_layer
    opt, _ = make_optimizer(OptimizerConfig(min_dim_size_to_factor=16))
    abstract = jax.eval_shape(opt.init, params)
    axes = _kernel_axes(params, scanned)
    state = t5x_adafactor.from_t5x(abstract, states, 5, params, axes)
    factored = next(s for s in state if isinstance(s, optax.FactoredState))
    assert int(factored.count) == 5
    vr = dict(flatten(factored.v_row))
    vc = dict(flatten(factored.v_col))
    key = ("encoder", "layers", "out") if scanned else ("encoder", "layers_1", "out")
    r, c = (vr[key][1], vc[key][1]) if scanned else (vr[key], vc[key])
    t5 = states["encoder"]["layers_1"]["out"]
    np.testing.assert_array_equal(r, t5["v_row"])  # optax's v_row: mean over the last axis
    np.testing.assert_array_equal(c, t5["v_col"])
    back = t5x_adafactor.to_t5x(state, params, axes)
    want, got = dict(flatten(states)), dict(flatten(back))
    assert got.keys() == want.keys()
    for k, v in want.items():
        np.testing.assert_array_equal(got[k], v, err_msg="/".join(k))


def test_full_v_maps_onto_factored_statistics_exactly():
    """t5x kept the full second moment (a larger min_dim); optax factoring takes its means."""
    params = {"w": np.zeros((16, 32), np.float32)}
    v = np.random.default_rng(0).uniform(0.5, 2, (16, 32)).astype(np.float32)
    zero = np.zeros((1,), np.float32)
    states = {"w": {"v_row": zero, "v_col": zero, "v": v, "m": zero}}
    opt, _ = make_optimizer(OptimizerConfig(min_dim_size_to_factor=16))
    state = t5x_adafactor.from_t5x(jax.eval_shape(opt.init, params), states, 1, params)
    factored = next(s for s in state if isinstance(s, optax.FactoredState))
    np.testing.assert_allclose(factored.v_row["w"], v.mean(axis=1), rtol=1e-6)
    np.testing.assert_allclose(factored.v_col["w"], v.mean(axis=0), rtol=1e-6)
    # The other way cannot be done: one clear error naming the param.
    states = t5x_adafactor_states(params, min_dim=16)
    opt, _ = make_optimizer(OptimizerConfig(min_dim_size_to_factor=64))
    with pytest.raises(t5x_adafactor.OptimizerMismatch, match="^w: t5x factored"):
        t5x_adafactor.from_t5x(jax.eval_shape(opt.init, params), states, 1, params)


def test_write_legacy_puts_what_t5x_puts_inline_in_the_msgpack(tmp_path):
    """As a checkpoint real t5x wrote: params, full v and m in zarr; step, v_row/v_col and the
    (1,) placeholders inline."""
    params = _kernels()
    states = t5x_adafactor_states(params, min_dim=16)
    t5x.write_legacy(tmp_path / "checkpoint_4", params, 4, states)
    tree = t5x._msgpack(tmp_path / "checkpoint_4")
    kinds = {key: t5x._is_spec(leaf) for key, leaf in t5x._leaves(tree)}
    assert kinds[("state", "step")] is False
    out = ("state", "param_states", "encoder", "layers_0", "out")
    assert not kinds[(*out, "v_row")] and not kinds[(*out, "v_col")] and not kinds[(*out, "v")]
    scale = ("state", "param_states", "encoder", "layers_0", "scale", "v")
    assert kinds[scale] and kinds[("target", "encoder", "layers_0", "out")]
    for key, is_zarr in kinds.items():
        leaf = tree
        for k in key:
            leaf = leaf[k]
        assert is_zarr or t5x_inline(key, leaf), key
        assert not is_zarr or key[-1] not in ("v_row", "v_col", "step"), key
    spec = tree["target"]["embedding"]
    assert spec["kvstore"]["path"] == "target.embedding/"
    assert (tmp_path / "checkpoint_4" / "state.param_states.encoder.layers_0.scale.v").is_dir()
    back = t5x.read(tmp_path / "checkpoint_4")
    np.testing.assert_array_equal(
        back.param_states["encoder"]["layers_0"]["out"]["v_row"],
        states["encoder"]["layers_0"]["out"]["v_row"],
    )
