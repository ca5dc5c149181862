"""t5x checkpoints: the legacy msgpack + tensorstore layout (read, write) and t5x's orbax layout.

Legacy (t5x `checkpoints.Checkpointer`, version 3): a directory `checkpoint_<step>` holding a
msgpack file `checkpoint` = {"version": 3, "optimizer": {"target": params, "state": {"step",
"param_states"}}}. Small leaves are inline arrays; the others are tensorstore zarr specs whose
kvstore path (`target.encoder.layers_0.mlp.wi_0.kernel`, `state.param_states....v_row`) is
relative to the checkpoint directory. t5x's orbax layout keeps the same state dict as the
PyTree item `checkpoint_<step>/state`.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import time
from collections.abc import Iterator, Mapping
from typing import Any

import numpy as np

from scicot_jax.paths import Path, PathLike, as_path, is_url

log = logging.getLogger(__name__)

CHECKPOINT_FILE = "checkpoint"
STATE_ITEM = "state"  # t5x's orbax item holding the train state dict
STEP_PREFIX = "checkpoint_"
VERSION = 3
LEGACY, ORBAX = "t5x", "t5x-orbax"
_CHUNK_BYTES = 64 * 2**20  # t5x's target chunk size


@dataclasses.dataclass
class T5xState:
    """What a t5x checkpoint holds: params, the step, and per-param optimizer state."""

    params: dict[str, Any]
    step: int | None = None
    param_states: dict[str, Any] | None = None  # {param path...: {"v_row", "v_col", "v", "m"}}


def find(path: PathLike) -> tuple[str, Path] | None:
    """(LEGACY | ORBAX, step dir) for a step dir, its `checkpoint` file or a model dir (latest)."""
    p = as_path(path)
    if p.name == CHECKPOINT_FILE and p.is_file():
        return LEGACY, p.parent
    if (p / CHECKPOINT_FILE).is_file():
        return LEGACY, p
    if (p / STATE_ITEM).is_dir() and p.name.startswith(STEP_PREFIX):
        return ORBAX, p
    steps = step_dirs(p)
    return find(steps[max(steps)]) if steps else None


def step_dirs(model_dir: PathLike) -> dict[int, Path]:
    """{step: dir} of the `checkpoint_<step>` directories directly under `model_dir`."""
    p = as_path(model_dir)
    if not p.is_dir():
        return {}
    out = {}
    for c in p.iterdir():
        tail = c.name[len(STEP_PREFIX) :]
        if c.name.startswith(STEP_PREFIX) and tail.isdigit() and c.is_dir():
            out[int(tail)] = c
    return out


def read(path: PathLike, *, optimizer: bool = True) -> T5xState:
    """Params (and step and optimizer state when asked) of a t5x checkpoint, as numpy."""
    found = find(path)
    if found is None:
        raise FileNotFoundError(f"{path}: no t5x checkpoint (no `checkpoint` file or `state/`)")
    kind, step_dir = found
    t0 = time.perf_counter()
    tree = _read_legacy(step_dir, optimizer) if kind == LEGACY else _read_orbax(step_dir)
    if "target" not in tree:
        raise ValueError(f"{step_dir}: t5x checkpoint has no 'target' (found {sorted(tree)})")
    state = tree.get("state") or {}
    step = state.get("step")
    out = T5xState(
        params=tree["target"],
        step=None if step is None else int(np.asarray(step)),
        param_states=state.get("param_states") if optimizer else None,
    )
    nbytes = sum(a.nbytes for _, a in _leaves(out.params))
    log.info(
        "read t5x checkpoint %s (%s, step %s, %.1f MB params) in %.2fs",
        step_dir,
        kind,
        out.step,
        nbytes / 1e6,
        time.perf_counter() - t0,
    )
    return out


def read_shapes(path: PathLike) -> dict[str, Any]:
    """Shapes of the params (`target`) without reading any array: from the msgpack's specs and
    inline leaves, or orbax's metadata."""
    found = find(path)
    if found is None:
        raise FileNotFoundError(f"{path}: no t5x checkpoint (no `checkpoint` file or `state/`)")
    kind, step_dir = found
    if kind == LEGACY:
        target = _msgpack(step_dir).get("target", {})
    else:
        import orbax.checkpoint as ocp

        with ocp.PyTreeCheckpointer() as ckptr:
            meta = ckptr.metadata(step_dir / STATE_ITEM)
        target = getattr(getattr(meta, "item_metadata", meta), "tree", meta)["target"]
    out: dict = {}
    for key, leaf in _leaves(target):
        shape = leaf["metadata"]["shape"] if _is_spec(leaf) else getattr(leaf, "shape", ())
        _set(out, key, tuple(int(d) for d in shape))
    return out


def config_from_shapes(shapes: Mapping[str, Any], **overrides: Any) -> Any:
    """The T5Config a t5x T5 v1.1 / Flan-T5 param tree implies (t5x stores no config)."""
    from scicot_jax.model.config import T5Config

    try:
        vocab, d_model = shapes["token_embedder"]["embedding"]
        heads, buckets = shapes["encoder"]["relpos_bias"]["rel_embedding"]
        layer0 = shapes["encoder"]["layers_0"]
        d_kv = layer0["attention"]["query"]["kernel"][1] // heads
        d_ff = layer0["mlp"]["wi_0"]["kernel"][1]
    except (KeyError, TypeError, ValueError) as e:
        raise ValueError(f"params are not a per-layer T5 v1.1 tree (t5_1_1 names): {e!r}") from e
    n_layers = {
        side: sum(1 for k in shapes[side] if k.startswith("layers_"))
        for side in ("encoder", "decoder")
    }
    return T5Config(
        vocab_size=vocab,
        d_model=d_model,
        num_heads=heads,
        d_kv=d_kv,
        d_ff=d_ff,
        num_encoder_layers=n_layers["encoder"],
        num_decoder_layers=n_layers["decoder"],
        relative_attention_num_buckets=buckets,
        **overrides,
    )


def _read_legacy(step_dir: Path, optimizer: bool) -> dict:
    tree = _msgpack(step_dir)
    if not optimizer and "target" in tree:  # skip reading the optimizer's arrays
        tree = {"target": tree["target"], "state": {"step": tree.get("state", {}).get("step")}}
    return _resolve_specs(tree, step_dir)


def _msgpack(step_dir: Path) -> dict:
    """The `optimizer` tree of a legacy `checkpoint` file (tensorstore specs not yet read)."""
    from flax import serialization

    file = step_dir / CHECKPOINT_FILE
    try:
        contents = serialization.msgpack_restore(file.read_bytes())
    except Exception as e:  # noqa: BLE001 - msgpack raises several unrelated types
        raise ValueError(f"{file}: not a t5x msgpack checkpoint ({type(e).__name__}: {e})") from e
    if not isinstance(contents, dict) or "optimizer" not in contents:
        found = sorted(contents) if isinstance(contents, dict) else type(contents).__name__
        raise ValueError(f"{file}: no 'optimizer' key (found {found}); not a t5x checkpoint")
    version = contents.get("version", 0)
    if version < 2:
        raise ValueError(f"{file}: t5x checkpoint version {version}; versions 2 and 3 are read")
    return contents["optimizer"]


def _resolve_specs(tree: dict, step_dir: Path) -> dict:
    """Replaces tensorstore spec leaves with the arrays they point to (read concurrently)."""
    import tensorstore as ts

    futures = {}
    for key, leaf in _leaves(tree):
        if _is_spec(leaf):
            futures[key] = ts.open(_absolute_spec(leaf, step_dir, ".".join(key)), open=True)
    opened = {k: f.result() for k, f in futures.items()}
    reads = {k: t.read() for k, t in opened.items()}
    out: dict = {}
    for key, leaf in _leaves(tree):
        value = np.asarray(reads[key].result()) if key in reads else leaf
        _set(out, key, value)
    return out


def _absolute_spec(spec: Mapping[str, Any], step_dir: Path, name: str) -> dict:
    """The stored (relative) spec opened from `step_dir`, local or gs://, as t5x does."""
    spec = {k: (dict(v) if isinstance(v, Mapping) else v) for k, v in spec.items()}
    kv = spec.get("kvstore")
    rel = (kv or {}).get("path") or spec.pop("path", None)
    if isinstance(kv, str) or rel is None:
        raise ValueError(
            f"{step_dir}/{CHECKPOINT_FILE}: {name}: unsupported tensorstore spec {spec}"
        )
    spec.pop("path", None)
    meta = dict(spec.get("metadata", {}))
    if spec.get("dtype") == "uint16" or meta.get("dtype") == "<u2":
        raise ValueError(
            f"{step_dir}: {name} is stored as uint16 (t5x version 2 bf16); unsupported"
        )
    # Chunks and compressor come from the stored .zarray; keeping them would only over-constrain.
    spec["metadata"] = {k: v for k, v in meta.items() if k in ("shape", "dtype")}
    full = os.path.join(os.fspath(step_dir), rel.rstrip("/"))
    if is_url(full):
        bucket, _, key = full[len("gs://") :].partition("/")
        spec["kvstore"] = {"driver": "gcs", "bucket": bucket, "path": key + "/"}
    else:
        spec["kvstore"] = {"driver": "file", "path": full + "/"}
    return spec


def _read_orbax(step_dir: Path) -> dict:
    import orbax.checkpoint as ocp

    item = step_dir / STATE_ITEM
    with ocp.PyTreeCheckpointer() as ckptr:
        meta = ckptr.metadata(item)
        tree = getattr(getattr(meta, "item_metadata", meta), "tree", meta)
        args = _map_tree(lambda _: ocp.RestoreArgs(restore_type=np.ndarray), tree)
        return ckptr.restore(item, restore_args=args)


def write_legacy(
    step_dir: PathLike,
    params: Mapping[str, Any],
    step: int,
    param_states: Mapping[str, Any] | None = None,
    *,
    dtype: Any = None,
) -> Path:
    """Writes `step_dir` in t5x's legacy layout; `dtype` (e.g. bfloat16) casts params only.

    As t5x's Checkpointer writes it: what has logical axes goes to a zarr store named like t5x's
    (`target.<path>/`; full `v` and `m` as `state.param_states.<path>.v/`); the step, the
    factored statistics `v_row`/`v_col` (t5x gives them no axes) and the (1,)-shaped
    placeholders of unused slots stay inline in the msgpack.
    """
    import tensorstore as ts
    from flax import serialization

    step_dir = as_path(step_dir)
    if (step_dir / CHECKPOINT_FILE).exists():
        raise FileExistsError(f"{step_dir}/{CHECKPOINT_FILE}: already exists")
    step_dir.mkdir(parents=True, exist_ok=True)
    state: dict[str, Any] = {"step": np.asarray(step, np.int32)}
    if param_states is not None:
        state["param_states"] = param_states
    tree = {"target": params, "state": state}
    written: dict = {}
    pending = []
    for key, leaf in _leaves(tree):
        arr = np.asarray(leaf)
        if key[0] == "target" and dtype is not None:
            arr = arr.astype(dtype)
        if _inline(key, arr):
            _set(written, key, arr)
            continue
        name = ".".join(key)
        spec = {
            "driver": "zarr",
            "dtype": arr.dtype.name,
            "kvstore": {"driver": "gcs" if is_url(step_dir) else "file", "path": name + "/"},
            "metadata": {
                "compressor": {"id": "gzip", "level": 1},
                "shape": list(arr.shape),
                "chunks": _chunks(arr.shape, arr.dtype.itemsize),
            },
        }
        if is_url(step_dir):  # t5x writes a placeholder bucket; readers use the dir's bucket
            spec["kvstore"]["bucket"] = "t5x-dummy-bucket"
        _set(written, key, spec)
        store = ts.open(
            _absolute_spec(spec, step_dir, name) | {"metadata": spec["metadata"]},
            create=True,
            open=True,
        ).result()
        pending.append(store.write(arr))
    for p in pending:
        p.result()
    body = serialization.msgpack_serialize({"version": VERSION, "optimizer": written})
    (step_dir / CHECKPOINT_FILE).write_bytes(body)  # last: its presence marks a complete step
    return step_dir


def _inline(key: tuple[str, ...], arr: np.ndarray) -> bool:
    """Whether t5x keeps this leaf in the msgpack: it does for leaves without logical axes."""
    if key[0] == "target":
        return False
    return key[-1] in ("v_row", "v_col") or arr.ndim == 0 or arr.shape == (1,)


def _chunks(shape: tuple[int, ...], itemsize: int) -> list[int]:
    """Largest chunk shape dividing `shape` within t5x's 64 MiB target (halving the largest)."""
    chunks = list(shape)
    while int(np.prod(chunks)) * itemsize > _CHUNK_BYTES:
        i = int(np.argmax(chunks))
        divisors = [d for d in range(chunks[i] - 1, 0, -1) if shape[i] % d == 0]
        chunks[i] = divisors[0]
    return chunks


def _is_spec(leaf: Any) -> bool:
    return isinstance(leaf, Mapping) and "driver" in leaf and "kvstore" in leaf


def _leaves(tree: Mapping[str, Any], prefix: tuple[str, ...] = ()) -> Iterator[tuple]:
    """(key path, leaf) pairs; tensorstore specs count as leaves."""
    for k, v in tree.items():
        if isinstance(v, Mapping) and not _is_spec(v):
            yield from _leaves(v, (*prefix, str(k)))
        elif v is not None:
            yield (*prefix, str(k)), v


def _set(tree: dict, key: tuple[str, ...], value: Any) -> None:
    for k in key[:-1]:
        tree = tree.setdefault(k, {})
    tree[key[-1]] = value


def _map_tree(fn: Any, tree: Any) -> Any:
    if isinstance(tree, Mapping):
        return {k: _map_tree(fn, v) for k, v in tree.items()}
    return fn(tree)
