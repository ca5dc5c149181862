"""t5x Adafactor state <-> optax.adafactor state.

t5x keeps, per parameter, {v_row, v_col, v, m} with unused slots as zeros((1,)); optax keeps
FactoredState(count, v_row, v_col, v) with the same placeholders, plus step counts in the
schedule and momentum states. Both factor 2-D kernels the same way up to which vector is called
the row: V ~ v_row (x) v_col / mean(v_row) is symmetric, so vectors are matched by the parameter
axis they index (by shape; for square kernels by t5x's rule that `embed` is the row axis).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import jax
import numpy as np
import optax

_ONE = (1,)


class OptimizerMismatch(ValueError):
    """The checkpoint's optimizer state cannot be mapped onto this optimizer."""


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
                lambda path, vr, vc, v, swap: _factored_from_t5x(
                    _lookup(param_states, path), vr, vc, v, swap, path
                ),
                node,
                abstract_params,
                logical_axes,
            )
            return node._replace(count=count, v_row=rows, v_col=cols, v=vs)
        if isinstance(node, optax.EmaState):
            ema = jax.tree_util.tree_map_with_path(
                lambda kp, a: _slot(_lookup(param_states, _names(kp)), "m", a, _names(kp)),
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


def to_t5x(opt_state: Any, params: Any, logical_axes: Any = None) -> dict | None:
    """t5x's per-param {v_row, v_col, v, m} from an optax.adafactor state, None if not Adafactor."""
    factored = _find(opt_state, optax.FactoredState)
    if factored is None:
        return None
    ema = _find(opt_state, optax.EmaState)
    out: dict = {}

    def one(path, vr, vc, v, swap):
        vr, vc, v = (np.asarray(jax.device_get(x), np.float32) for x in (vr, vc, v))
        if v.shape == _ONE and vr.shape != _ONE and swap:
            vr, vc = vc, vr
        m = np.asarray(jax.device_get(_lookup(ema.ema, path)), np.float32) if ema else _zeros()
        node = out
        for k in path[:-1]:
            node = node.setdefault(k, {})
        node[path[-1]] = {"v_row": vr, "v_col": vc, "v": v, "m": m}
        return vr, vc, v

    _map_params(one, factored, params, logical_axes)
    return out


def step_of(opt_state: Any) -> int | None:
    """The step count kept in an optax.adafactor state (None if it keeps none)."""
    factored = _find(opt_state, optax.FactoredState)
    return None if factored is None else int(jax.device_get(factored.count))


def _map_params(fn: Any, state: optax.FactoredState, params: Any, logical_axes: Any) -> tuple:
    """fn(path, v_row, v_col, v, swap) -> (v_row, v_col, v) for every parameter, where swap
    says t5x's v_row is optax's v_col for that parameter."""
    rows, treedef = jax.tree_util.tree_flatten_with_path(state.v_row)
    cols, vs = jax.tree.leaves(state.v_col), jax.tree.leaves(state.v)
    shapes = [tuple(p.shape) for p in jax.tree.leaves(params)]
    axes = _axes_by_path(logical_axes)
    out = [
        fn(_names(kp), vr, vc, v, _row_is_optax_col(shape, axes.get(_names(kp))))
        for (kp, vr), vc, v, shape in zip(rows, cols, vs, shapes, strict=True)
    ]
    return tuple(jax.tree.unflatten(treedef, [o[i] for o in out]) for i in range(3))


def _factored_from_t5x(s: Mapping, vr: Any, vc: Any, v: Any, swap: bool, path: tuple) -> tuple:
    if tuple(v.shape) != _ONE or tuple(vr.shape) == _ONE:  # optax keeps the full second moment
        return _zeros(), _zeros(), _slot(s, "v", v, path)
    want = (tuple(vr.shape), tuple(vc.shape))
    tr, tc = _slot(s, "v_row", None, path), _slot(s, "v_col", None, path)
    if tr.shape != tc.shape:  # shapes tell which is which, whatever rules t5x factored by
        swap = (tc.shape, tr.shape) == want
    if swap:
        tr, tc = tc, tr
    if (tr.shape, tc.shape) != want:
        raise OptimizerMismatch(
            f"{'/'.join(path)}: t5x v_row/v_col shapes {tr.shape}/{tc.shape}, optax factors "
            f"this parameter as {want[0]}/{want[1]}"
        )
    return tr, tc, _zeros()


def _row_is_optax_col(shape: tuple, axes: Any) -> bool:
    """For a 2-D kernel: whether t5x's v_row (indexed by `embed`) is optax's v_col.

    optax averages v_row over the larger dim d0 (the last on ties); t5x's standard rules make
    `embed` the row axis, so the two differ exactly when `embed` is d0.
    """
    names = tuple(axes) if axes is not None else ()
    if len(shape) != 2 or len(names) != 2 or "embed" not in names:
        return False  # t5x's heuristic factoring is optax's
    d0 = int(np.argsort(shape, kind="stable")[-1])
    return names.index("embed") == d0


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
