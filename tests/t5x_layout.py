"""Test helpers that write checkpoints the way t5x does, independently of scicot_jax's writer:
the legacy msgpack `checkpoint` file with tensorstore zarr arrays in `target.*` folders, and
t5x's orbax layout (`checkpoint_<step>/state`)."""

from __future__ import annotations

import os

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


def t5x_inline(key: tuple, arr) -> bool:
    """Whether real t5x keeps a leaf inline in the msgpack (seen in a checkpoint its Checkpointer
    wrote, tools/verify_t5x.py): leaves without logical axes, i.e. the step, Adafactor's
    v_row/v_col at any size, and the (1,) placeholders of unused slots. Params, full `v` and
    `m` go to zarr."""
    if key[0] == "target":
        return False
    return key[-1] in ("v_row", "v_col") or np.ndim(arr) == 0 or np.shape(arr) == (1,)


def write_legacy_t5x(step_dir, tree: dict, *, gcs: bool = False) -> None:
    """t5x Checkpointer.save's layout for `tree` = {"target": ..., "state": {...}}: leaves with
    logical axes go to zarr (gzip level 1, relative `kvstore.path` with a trailing slash), the
    rest stay inline in the msgpack file, written last under its name `checkpoint`."""
    import tensorstore as ts
    from flax import serialization

    step_dir = os.fspath(step_dir)
    written = []
    for key, arr in flatten(tree):
        arr = np.asarray(arr)
        if t5x_inline(key, arr):
            written.append((key, arr))
            continue
        name = ".".join(key)
        kvstore = (
            {"driver": "gcs", "bucket": "t5x-dummy-bucket"}
            if gcs
            else {"driver": "file", "path": name + "/"}
        )
        spec = {
            "driver": "zarr",
            "dtype": arr.dtype.name,
            "kvstore": kvstore,
            "metadata": {
                "compressor": {"id": "gzip", "level": 1},
                "shape": arr.shape,
                "chunks": arr.shape,
            },
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


def t5x_adafactor_states(params: dict, min_dim: int, seed: int = 0) -> dict:
    """t5x Adafactor param states as t5x keeps them for T5's 2-D params: its factor rules are
    ignored at rank <= 2 (`Adafactor._parse_rule`), so the shape heuristic factors them: d0 the
    largest dim (the last on ties, so a square kernel's v_row is indexed by its first axis),
    v_row = mean over d0, v_col = mean over the other. Built from a random squared gradient G so
    v_row and v_col are consistent means of it; unfactored params keep G as `v`."""
    rng = np.random.default_rng(seed)
    out = []
    for key, p in flatten(params):
        g = rng.uniform(0.5, 2.0, p.shape).astype(np.float32)
        state = {k: np.zeros((1,), np.float32) for k in ("v_row", "v_col", "v", "m")}
        if p.ndim == 2 and min(p.shape) >= min_dim:
            d0 = int(np.argsort(p.shape)[-1])
            state["v_row"] = g.mean(axis=d0)
            state["v_col"] = g.mean(axis=1 - d0)
        else:
            state["v"] = g
        out.append((key, state))
    return nest(out)


def bf16(x) -> np.ndarray:
    return np.asarray(x).astype(ml_dtypes.bfloat16)
