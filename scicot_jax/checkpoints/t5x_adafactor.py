"""t5x Adafactor state <-> optax.adafactor state.

t5x keeps, per parameter, {v_row, v_col, v, m} with unused slots as zeros((1,)); optax keeps
FactoredState(count, v_row, v_col, v) with the same placeholders, plus step counts in the
schedule and momentum states. Both write v_row = mean of the squared gradient over the column
dims, v_col = mean over the row dims; they differ only in which dims are rows and columns:

- optax: the two largest dims, (second largest, largest), numpy's argsort order on ties;
- t5x (`Adafactor._parse_rule`): params of rank <= 2 without a batch axis use that same shape
  heuristic (its factor rules are ignored for them), higher ranks its logical factor rules
  (`embed` is the row; `layers` a batch axis; `min_dim_size_to_factor` not applied).

So 2-D kernels map one to one, square ones included. A scanned model's stacked (layers, ...)
params map to the per-layer states of a t5x checkpoint (t5x's heuristic per layer, shifted by the
layer axis); a full `v` maps onto factored statistics exactly (they are its means).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import jax
import numpy as np
import optax

_ONE = (1,)
MIN_DIM = 128  # t5x's (and optax's) default min_dim_size_to_factor
# t5x.adafactor.standard_logical_factor_rules(): axis name -> row / col / batch (others: none).
_ROW, _COL, _BATCH = "row", "col", "batch"
_RULES = {
    "embed": _ROW,
    **dict.fromkeys(
        (
            "vocab",
            "mlp",
            "heads",
            "kv",
            "joined_kv",
            "q_wi_fused",
            "o_wo_fused",
            "multiquery_heads",
            "kv_fused",
            "mlp_activations",
        ),
        _COL,
    ),
    "layers": _BATCH,
    "stack": _BATCH,
}

Dims = tuple[tuple[int, ...], tuple[int, ...]] | None  # (row dims, column dims) or unfactored


class OptimizerMismatch(ValueError):
    """The checkpoint's optimizer state cannot be mapped onto this optimizer."""


def optax_factored_dims(shape: tuple, min_dim: int = MIN_DIM) -> Dims:
    """optax.adafactor's (and t5x's heuristic) factoring: the two largest dims, if >= min_dim."""
    if len(shape) < 2:
        return None
    order = np.argsort(shape)
    if shape[order[-2]] < min_dim:
        return None
    return (int(order[-2]),), (int(order[-1]),)


def t5x_factored_dims(shape: tuple, axes: Any = None, min_dim: int = MIN_DIM) -> Dims:
    """How t5x's Adafactor (standard logical factor rules) factors a param of `shape`."""
    names = tuple(axes) if axes is not None else None
    rules = tuple(_RULES.get(a) for a in names) if names is not None else ()
    if len(shape) <= 2 and _BATCH not in rules:
        return optax_factored_dims(shape, min_dim)
    if names is None or len(names) != len(shape):
        raise OptimizerMismatch(
            f"t5x factors a rank-{len(shape)} param by its logical axes; got axes {names}"
        )
    rows = tuple(i for i, r in enumerate(rules) if r == _ROW)
    cols = tuple(i for i, r in enumerate(rules) if r == _COL)
    return (rows, cols) if rows and cols else None


def from_t5x(
    abstract_opt_state: Any,
    param_states: Mapping,
    step: int,
    abstract_params: Any,
    logical_axes: Any = None,
) -> Any:
    """optax state (numpy leaves) holding t5x's per-param Adafactor state at `step`."""
    count = np.asarray(step, np.int32)

    def convert(node: Any) -> Any:
        if isinstance(node, optax.FactoredState):
            rows, cols, vs = _map_params(
                lambda path, shape, axes, vr, vc, v: _factored_from_t5x(
                    _t5x_state(param_states, path), path, shape, axes, vr, vc, v
                ),
                node,
                abstract_params,
                logical_axes,
            )
            return node._replace(count=count, v_row=rows, v_col=cols, v=vs)
        if isinstance(node, optax.EmaState):
            ema = jax.tree_util.tree_map_with_path(
                lambda kp, a: _slot(_t5x_state(param_states, _names(kp)), "m", a, _names(kp)),
                node.ema,
            )
            return node._replace(count=count, ema=ema)
        if isinstance(node, optax.ScaleByScheduleState):
            return node._replace(count=count)
        if isinstance(node, optax.EmptyState) or node == ():
            return node
        if type(node) is tuple:
            return tuple(convert(c) for c in node)
        raise OptimizerMismatch(f"optimizer state {type(node).__name__} has no t5x Adafactor peer")

    return convert(abstract_opt_state)


def to_t5x(
    opt_state: Any, params: Any, logical_axes: Any = None, min_dim: int | None = None
) -> dict | None:
    """t5x's per-param {v_row, v_col, v, m} (per layer, as t5x's T5 keeps params) from an
    optax.adafactor state, None if not Adafactor. `min_dim`: the t5x run's
    min_dim_size_to_factor; None: the one the optax state was built with (the shared heuristic
    then factors the same params)."""
    factored = _find(opt_state, optax.FactoredState)
    if factored is None:
        return None
    ema = _find(opt_state, optax.EmaState)
    out: dict = {}

    def one(path, shape, axes, vr, vc, v):
        vr, vc, v = (np.asarray(jax.device_get(x), np.float32) for x in (vr, vc, v))
        m = np.asarray(jax.device_get(_lookup(ema.ema, path)), np.float32) if ema else _zeros()
        state = _factored_to_t5x(path, shape, axes, vr, vc, v, min_dim) | {"m": m}
        for layer_path, layer_state in _per_layer(path, state):
            node = out
            for k in layer_path[:-1]:
                node = node.setdefault(k, {})
            node[layer_path[-1]] = layer_state
        return vr, vc, v

    _map_params(one, factored, params, logical_axes)
    return out


def step_of(opt_state: Any) -> int | None:
    """The step count kept in an optax.adafactor state (None if it keeps none)."""
    factored = _find(opt_state, optax.FactoredState)
    return None if factored is None else int(jax.device_get(factored.count))


def _map_params(fn: Any, state: optax.FactoredState, params: Any, logical_axes: Any) -> tuple:
    """fn(path, param shape, logical axes, v_row, v_col, v) -> (v_row, v_col, v) per param."""
    rows, treedef = jax.tree_util.tree_flatten_with_path(state.v_row)
    cols, vs = jax.tree.leaves(state.v_col), jax.tree.leaves(state.v)
    shapes = [tuple(p.shape) for p in jax.tree.leaves(params)]
    axes = _axes_by_path(logical_axes)
    out = [
        fn(_names(kp), shape, axes.get(_names(kp)), vr, vc, v)
        for (kp, vr), vc, v, shape in zip(rows, cols, vs, shapes, strict=True)
    ]
    return tuple(jax.tree.unflatten(treedef, [o[i] for o in out]) for i in range(3))


def _t5x_dims(path: tuple, shape: tuple, axes: Any, min_dim: int = MIN_DIM) -> Dims:
    """t5x's factoring of the param at `path`; a scanned (stacked) param is t5x's per-layer
    param factored per layer (t5x's T5 checkpoints keep `layers_<i>`), dims shifted by one."""
    if not _is_scanned(path):
        return t5x_factored_dims(shape, axes, min_dim)
    inner = t5x_factored_dims(shape[1:], None if axes is None else tuple(axes)[1:], min_dim)
    return None if inner is None else tuple(tuple(d + 1 for d in ds) for ds in inner)


def _factored_from_t5x(
    s: Mapping, path: tuple, shape: tuple, axes: Any, vr: Any, vc: Any, v: Any
) -> tuple:
    name = "/".join(path)
    ours = None if tuple(v.shape) != _ONE or tuple(vr.shape) == _ONE else _dims_of(shape, vr, vc)
    tv = _slot(s, "v", None, path)
    if tv.shape == tuple(shape):  # t5x kept the full second moment
        if ours is None:
            return _zeros(), _zeros(), tv.astype(v.dtype)
        return tv.mean(axis=ours[1]), tv.mean(axis=ours[0]), _zeros()
    tr, tc = _slot(s, "v_row", None, path), _slot(s, "v_col", None, path)
    theirs = _t5x_dims(path, shape, axes, min_dim=0)  # stored factored: t5x's rule says how
    if theirs is not None and tr.shape != tc.shape:  # shapes alone tell non-square ones apart
        if (tc.shape, tr.shape) == _factored_shapes(shape, theirs):
            theirs = theirs[::-1]
    if theirs is None or (tr.shape, tc.shape) != _factored_shapes(shape, theirs):
        raise OptimizerMismatch(
            f"{name}: t5x v_row/v_col shapes {tr.shape}/{tc.shape} are not how t5x factors a "
            f"{shape} param (expected {_factored_shapes(shape, theirs) if theirs else 'full v'})"
        )
    if ours is None:
        raise OptimizerMismatch(
            f"{name}: t5x factored the second moment of this {shape} param, optax keeps it full "
            "(min_dim_size_to_factor or factored differ); a full one cannot be recovered"
        )
    if theirs == ours:
        return tr, tc, _zeros()
    if theirs == ours[::-1]:
        return tc, tr, _zeros()
    raise OptimizerMismatch(
        f"{name}: t5x factors this {shape} param over dims {theirs}, optax over {ours}"
    )


def _factored_to_t5x(
    path: tuple,
    shape: tuple,
    axes: Any,
    vr: np.ndarray,
    vc: np.ndarray,
    v: np.ndarray,
    min_dim: int | None,
) -> dict:
    name = "/".join(path)
    full = v.shape == tuple(shape)
    if min_dim is None:  # as optax decided: it factors by the heuristic t5x uses at rank <= 2
        min_dim = 2**62 if full else 0
    theirs = _t5x_dims(path, shape, axes, min_dim)
    if full:  # optax kept the full second moment
        if theirs is None:
            return {"v_row": _zeros(), "v_col": _zeros(), "v": v}
        return {"v_row": v.mean(axis=theirs[1]), "v_col": v.mean(axis=theirs[0]), "v": _zeros()}
    ours = _dims_of(shape, vr, vc)
    if theirs is None:
        raise OptimizerMismatch(
            f"{name}: optax factored the second moment of this {shape} param, t5x keeps it full"
        )
    if theirs == ours:
        return {"v_row": vr, "v_col": vc, "v": _zeros()}
    if theirs == ours[::-1]:
        return {"v_row": vc, "v_col": vr, "v": _zeros()}
    raise OptimizerMismatch(
        f"{name}: optax factors this {shape} param over dims {ours}, t5x over {theirs}"
    )


def _dims_of(shape: tuple, vr: Any, vc: Any) -> Dims:
    """optax's factoring of a param whose stored v_row/v_col have these shapes."""
    dims = optax_factored_dims(shape, min_dim=0)
    if dims is None or (tuple(vr.shape), tuple(vc.shape)) != _factored_shapes(shape, dims):
        raise OptimizerMismatch(f"optax v_row/v_col {vr.shape}/{vc.shape} for a {shape} param")
    return dims


def _factored_shapes(shape: tuple, dims: Dims) -> tuple:
    rows, cols = dims
    return tuple(np.delete(shape, cols).tolist()), tuple(np.delete(shape, rows).tolist())


def _is_scanned(path: tuple) -> bool:
    return len(path) > 2 and path[0] in ("encoder", "decoder") and path[1] == "layers"


def _t5x_state(param_states: Mapping, path: tuple) -> Mapping:
    """t5x's {v_row, v_col, v, m} for the param at `path`; for a scanned param, the per-layer
    states stacked (a slot all placeholders stays one placeholder)."""
    if not _is_scanned(path):
        return _lookup(param_states, path)
    stack = _lookup(param_states, path[:1])
    n = sum(1 for k in stack if k.startswith("layers_") and k[len("layers_") :].isdigit())
    if n == 0:
        raise OptimizerMismatch(f"{'/'.join(path)}: no per-layer optimizer state in the checkpoint")
    layers = [_lookup(param_states, (path[0], f"layers_{i}", *path[2:])) for i in range(n)]
    out = {}
    for slot in sorted(set().union(*layers)):
        arrs = [np.asarray(layer[slot]) for layer in layers if slot in layer]
        if len(arrs) == n:
            out[slot] = arrs[0] if all(a.shape == _ONE for a in arrs) else np.stack(arrs)
    return out


def _per_layer(path: tuple, state: dict) -> list[tuple[tuple, dict]]:
    """[(path, state)] with a scanned param's state split into t5x's `layers_<i>` entries."""
    if not _is_scanned(path):
        return [(path, state)]
    n = max(a.shape[0] for a in state.values() if a.shape != _ONE)
    return [
        (
            (path[0], f"layers_{i}", *path[2:]),
            {k: a if a.shape == _ONE else a[i] for k, a in state.items()},
        )
        for i in range(n)
    ]


def _slot(s: Mapping, name: str, like: Any, path: tuple) -> np.ndarray:
    if name not in s:
        raise OptimizerMismatch(f"{'/'.join(path)}: t5x state has no {name!r} (has {sorted(s)})")
    a = np.asarray(s[name])
    if like is None:
        return a.astype(np.float32)
    if a.shape != tuple(like.shape):
        raise OptimizerMismatch(
            f"{'/'.join(path)}: t5x {name} has shape {a.shape}, optax expects {tuple(like.shape)}"
        )
    return a.astype(like.dtype)


def _lookup(tree: Mapping, path: tuple) -> Any:
    node = tree
    for k in path:
        if not isinstance(node, Mapping) or k not in node:
            raise OptimizerMismatch(f"{'/'.join(path)}: no optimizer state in the checkpoint")
        node = node[k]
    return node


def _find(state: Any, kind: type) -> Any:
    if isinstance(state, kind):
        return state
    if isinstance(state, tuple):
        for c in state:
            found = _find(c, kind)
            if found is not None:
                return found
    return None


def _axes_by_path(logical_axes: Any) -> dict:
    if logical_axes is None:
        return {}
    flat = jax.tree_util.tree_flatten_with_path(
        logical_axes, is_leaf=lambda x: isinstance(x, jax.sharding.PartitionSpec)
    )[0]
    return {_names(kp): spec for kp, spec in flat}


def _names(keypath: Any) -> tuple[str, ...]:
    return tuple(str(getattr(k, "key", getattr(k, "name", k))) for k in keypath)


def _zeros() -> np.ndarray:
    return np.zeros(_ONE, np.float32)


def optax_structure(raw: Any) -> Any:
    """optax state types back on an opt_state restored without a target (dicts and lists)."""
    if isinstance(raw, Mapping):
        keys = set(raw)
        if keys == {"count", "v_row", "v_col", "v"}:
            return optax.FactoredState(**raw)
        if keys == {"count", "ema"}:
            return optax.EmaState(**raw)
        if keys == {"count"}:
            return optax.ScaleByScheduleState(**raw)
        return raw
    if isinstance(raw, list | tuple):
        return tuple(optax.EmptyState() if c is None else optax_structure(c) for c in raw)
    return raw
