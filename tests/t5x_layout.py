"""Test helpers that write checkpoints the way t5x does, independently of scicot_jax's writer:
the legacy msgpack `checkpoint` file with tensorstore zarr arrays in `target.*` folders, and
t5x's orbax layout (`checkpoint_<step>/state`)."""

from __future__ import annotations

import os

import jax
import ml_dtypes
import numpy as np


def flatten(tree, prefix=()):
    for k, v in tree.items():
        if isinstance(v, dict):
            yield from flatten(v, (*prefix, k))
        else:
            yield (*prefix, k), v


def nest(pairs):
    out: dict = {}
    for key, v in pairs:
        node = out
        for k in key[:-1]:
            node = node.setdefault(k, {})
        node[key[-1]] = v
    return out


def write_legacy_t5x(step_dir, tree: dict, *, gcs: bool = False) -> None:
    """t5x Checkpointer.save's layout for `tree` = {"target": ..., "state": {...}}: leaves with
    ndim >= 1 and more than one element go to zarr (gzip, relative `kvstore.path`), the rest
    stay inline in the msgpack file, written last under its name `checkpoint`."""
    import tensorstore as ts
    from flax import serialization

    step_dir = os.fspath(step_dir)
    written = []
    for key, arr in flatten(tree):
        arr = np.asarray(arr)
        if arr.size <= 1:
            written.append((key, arr))
            continue
        name = ".".join(key)
        kvstore = (
            {"driver": "gcs", "bucket": "t5x-dummy-bucket"}
            if gcs
            else {"driver": "file", "path": name}
        )
        spec = {
            "driver": "zarr",
            "dtype": arr.dtype.name,
            "kvstore": kvstore,
            "metadata": {"compressor": {"id": "gzip"}, "shape": arr.shape, "chunks": arr.shape},
        }
        if gcs:
            spec["path"] = name  # t5x's gs:// spec: a top-level path, bucket filled in on read
        stored = ts.Spec(spec).to_json()
        if gcs:
            bucket, _, base = step_dir[len("gs://") :].partition("/")
            target = {"driver": "gcs", "bucket": bucket, "path": f"{base}/{name}/"}
        else:
            target = {"driver": "file", "path": f"{step_dir}/{name}/"}
        store = ts.open({**stored, "kvstore": target}, create=True, open=True).result()
        store.write(arr).result()
        written.append((key, stored))
    body = serialization.msgpack_serialize({"version": 3, "optimizer": nest(written)})
    from etils import epath

    path = epath.Path(step_dir)
    path.mkdir(parents=True, exist_ok=True)
    (path / "checkpoint").write_bytes(body)


def write_orbax_t5x(step_dir, tree: dict) -> None:
    """t5x's OrbaxCheckpointManager layout: the state dict as the PyTree item `state`."""
    import orbax.checkpoint as ocp

    with ocp.PyTreeCheckpointer() as ckptr:
        ckptr.save(os.path.join(os.fspath(step_dir), "state"), tree)


def t5x_adafactor_states(params: dict, axes: dict, min_dim: int, seed: int = 0) -> dict:
    """t5x Adafactor param states under standard_logical_factor_rules (`embed` is the row),
    built from a random squared-gradient G so v_row and v_col are consistent means of it."""
    rng = np.random.default_rng(seed)
    out = []
    for key, p in flatten(params):
        names = tuple(axes[key])
        g = rng.uniform(0.5, 2.0, p.shape).astype(np.float32)
        state = {k: np.zeros((1,), np.float32) for k in ("v_row", "v_col", "v", "m")}
        if p.ndim == 2 and "embed" in names and min(p.shape) >= min_dim and len(set(names)) == 2:
            e = names.index("embed")
            state["v_row"] = g.mean(axis=1 - e)  # indexed by embed
            state["v_col"] = g.mean(axis=e)
        else:
            state["v"] = g
        out.append((key, state))
    return nest(out)


def logical_axes_by_key(config) -> dict:
    from scicot_jax.model import logical_axes

    flat = jax.tree_util.tree_flatten_with_path(
        logical_axes(config), is_leaf=lambda x: isinstance(x, jax.sharding.PartitionSpec)
    )[0]
    return {tuple(k.key for k in kp): spec for kp, spec in flat}


def bf16(x) -> np.ndarray:
    return np.asarray(x).astype(ml_dtypes.bfloat16)
