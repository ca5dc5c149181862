"""Batched, data-sharded prediction and scoring over token lists (shared by infer and eval).

On a pod each process passes only its own examples (its data shard, `partitioning.data_layout`)
and gets their results; the processes agree on the number of batches and their padded lengths,
so a host with fewer (or no) examples feeds filler batches instead of leaving the others waiting.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable, Sequence
from typing import Any

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding

from scicot_jax.checkpoints.init_from import checkpoint_config, load_initial_params
from scicot_jax.data.tokens import pad_rows, shift_right
from scicot_jax.model import T5Config, logical_axes, param_shapes
from scicot_jax.model.decoding import DecodeConfig, generate
from scicot_jax.model.scoring import score as score_fn
from scicot_jax.paths import PathLike
from scicot_jax.progress import StepProgress
from scicot_jax.runtime import partitioning as part

log = logging.getLogger(__name__)


# What fixes the params' shapes; dtypes, dropout, scan and remat are the run's to choose.
ARCH_FIELDS = (
    "vocab_size",
    "d_model",
    "num_heads",
    "d_kv",
    "d_ff",
    "num_encoder_layers",
    "num_decoder_layers",
    "relative_attention_num_buckets",
)


def check_model(path: PathLike, model: T5Config) -> T5Config:
    """`model` (a model gin's MODEL), once it agrees with the checkpoint's own config on every
    field that sets a param shape; else one error naming the first field that differs."""
    try:
        own = checkpoint_config(path)
    except (ValueError, FileNotFoundError, KeyError):
        return model  # no config stored: the params' shapes are checked on load
    for field in ARCH_FIELDS:
        want, got = getattr(model, field), getattr(own, field)
        if want != got:
            raise ValueError(
                f"{path}: the model gin sets T5Config.{field} = {want!r} but the checkpoint has "
                f"{got!r}; give the model gin of the checkpoint's size (or none: its own config "
                "is used)"
            )
    return model


def load_model(
    path: PathLike, model: T5Config | None = None, mesh: Mesh | None = None
) -> tuple[T5Config, Any]:
    """(config, params sharded on mesh); `model` overrides the checkpoint's own config."""
    config = checkpoint_config(path) if model is None else check_model(path, model)
    mesh = mesh or part.make_mesh()
    abstract = param_shapes(config)
    shardings = part.params_shardings(logical_axes(config), abstract, mesh)
    params = load_initial_params(path, abstract, shardings, config)
    return config, params


MIN_BUCKET = 8  # shortest padded length; buckets grow from here up to the caller's cap


def bucket_length(n: int, cap: int) -> int:
    """The padded length for a row of n tokens (>= MIN_BUCKET, <= cap): n rounded up to a
    quarter of its power of two (steps of 16 from 64 to 128, of 32 to 256, ...): at most 25%
    padding in four compiled shapes per doubling. Powers of two alone put lengths that cluster
    just above one (compass questions, 82-93 tokens) a third into padding (128)."""
    step = 1 << max(0, (n - 1).bit_length() - 3)
    return min(cap, max(MIN_BUCKET, -(-n // step) * step))


@dataclasses.dataclass(frozen=True)
class Batch:
    """One global batch: caller indices of its rows (filler rows repeat the last) and the padded
    length of each feature (one compiled shape per distinct set of lengths)."""

    rows: tuple[int, ...]
    size: int  # real rows; rows[size:] are fillers
    lengths: tuple[int, ...]


def plan_batches(
    lengths: Sequence[Sequence[int]], caps: Sequence[int], batch_size: int
) -> list[Batch]:
    """Batches of `batch_size` rows, longest first, each padded only to its own bucket.

    `lengths[f][i]` is feature f's token count for example i, truncated at `caps[f]`. Sorting by
    the bucketed lengths groups rows that need the same compiled shape, and similar lengths
    finish decoding together, so a batch's early stop fires sooner. The last batch is filled with
    copies of its last row (not empty rows, which might never emit EOS and hold the loop open).
    """
    n = len(lengths[0]) if lengths else 0
    clipped = [[min(x, cap) for x in feat] for feat, cap in zip(lengths, caps)]
    key = lambda i: (
        tuple(-bucket_length(f[i], c) for f, c in zip(clipped, caps))
        + tuple(-f[i] for f in clipped)
    )
    order = sorted(range(n), key=key)  # stable: ties keep the caller's order
    out = []
    for start in range(0, n, batch_size):
        idx = order[start : start + batch_size]
        lens = tuple(bucket_length(max(f[i] for i in idx), c) for f, c in zip(clipped, caps))
        out.append(Batch(tuple(idx + idx[-1:] * (batch_size - len(idx))), len(idx), lens))
    return out


def agree_batches(batches: Sequence[Batch], local_batch: int) -> list[Batch]:
    """The batches every process runs in lockstep: as many as the busiest host has, each padded
    to the longest bucket any host needs for it; a host out of rows gets filler batches."""
    if jax.process_count() == 1:
        return list(batches)
    from jax.experimental import multihost_utils

    part.sync_processes("inference plan")  # hosts arrive unevenly (loading, reading data)
    counts = np.asarray(multihost_utils.process_allgather(np.int32(len(batches))))
    n = int(counts.max())
    features = len(batches[0].lengths) if batches else 0
    features = int(np.asarray(multihost_utils.process_allgather(np.int32(features))).max())
    lens = np.zeros((n, features), np.int32)
    for k, b in enumerate(batches):
        lens[k] = b.lengths
    agreed = np.asarray(multihost_utils.process_allgather(lens)).max(axis=0)
    filler = Batch((-1,) * local_batch, 0, ())
    return [
        dataclasses.replace(batches[k] if k < len(batches) else filler, lengths=tuple(map(int, ls)))
        for k, ls in enumerate(agreed)
    ]


def batch_rows(seqs: Sequence[Sequence[int]], batch: Batch, filler: Sequence[int]) -> list:
    """The token lists of a batch's rows; `filler` for the rows of a filler batch."""
    return [seqs[i] if i >= 0 else filler for i in batch.rows]


def run_pipelined(
    batches: Sequence[Batch],
    dispatch: Callable[[int, Batch], Any],
    unpack: Callable[[Batch, Any], Sequence[Any]],
    progress: str | None = None,
    sharding: Any = None,
) -> list[Any]:
    """Per-example results in the caller's order; a progress line labelled ``progress``.

    `dispatch(k, batch)` starts batch k on the device and returns its device arrays without
    waiting; `unpack(batch, host_arrays)` turns this process's fetched rows (`sharding`: the
    inputs') into one result per real row. Batch k+1 is dispatched before batch k is fetched,
    so the device never waits on the host.
    """
    results: dict[int, Any] = {}
    shown = progress is not None and jax.process_index() == 0
    bar = StepProgress(progress or "", len(batches), unit="rows", enabled=shown)

    def drain(batch: Batch, arrays: Any) -> None:
        host = part.process_rows(arrays, sharding) if sharding is not None else arrays
        for i, r in zip(batch.rows[: batch.size], unpack(batch, host)):
            results[i] = r
        bar.advance(bar.step + 1, batch.size)

    pending: tuple[Batch, Any] | None = None
    shapes: set[tuple[int, ...]] = set()
    for k, batch in enumerate(batches):
        if batch.lengths not in shapes:  # a new shape compiles: hosts start it together, as
            shapes.add(batch.lengths)  # gloo gives up on a peer later than its timeout
            part.sync_processes("inference shape")
        arrays = dispatch(k, batch)
        if pending is not None:
            drain(*pending)
        pending = (batch, arrays)
    if pending is not None:
        drain(*pending)
    return [results[i] for i in range(len(results))]


def predict(
    params: Any,
    config: T5Config,
    mesh: Mesh,
    inputs: Sequence[Sequence[int]],
    *,
    input_length: int,
    decode: DecodeConfig,
    batch_size: int = 32,
    progress: str | None = None,
    vocab_size: int | None = None,
) -> list[tuple[list[list[int]], list[float]]]:
    """Per input: (num_decodes token lists cut at EOS, scores), best first for beam; only ids
    below `vocab_size` (the vocabulary's pieces) are emitted.

    `inputs` are this process's examples (all of them on one host); `batch_size` is global.
    Inputs are truncated at `input_length`; `decode.max_decode_length` must be set; batch k
    (in length-sorted order) samples with rng fold_in(key(decode.seed), k).
    """
    data_sh, local = _local_batch(batch_size, mesh)
    batches = plan_batches([[len(r) for r in inputs]], [input_length], local)
    batches = agree_batches(batches, local)

    def dispatch(k: int, batch: Batch) -> Any:
        rows = batch_rows(inputs, batch, [config.eos_id])
        enc = pad_rows(rows, batch.lengths[0], config.pad_id)
        return generate(
            params,
            config,
            part.to_global({"x": enc}, data_sh)["x"],
            decode,
            rng=jax.random.fold_in(jax.random.key(decode.seed), k),
            vocab_size=vocab_size,
        )

    def unpack(batch: Batch, host: Any) -> list:
        toks, scores = host
        return [
            (
                [_cut(t, config.eos_id, config.pad_id) for t in toks[j]],
                [float(s) for s in scores[j]],
            )
            for j in range(batch.size)
        ]

    return run_pipelined(batches, dispatch, unpack, progress, data_sh)


def score(
    params: Any,
    config: T5Config,
    mesh: Mesh,
    inputs: Sequence[Sequence[int]],
    targets: Sequence[Sequence[int]],
    *,
    input_length: int,
    target_length: int,
    batch_size: int = 32,
    progress: str | None = None,
    vocab_size: int | None = None,
) -> list[dict[str, float]]:
    """Per example: sum/mean log-probability of the target tokens and their count (normalised
    over the first `vocab_size` ids when given: spare embedding rows get no probability).

    `inputs`/`targets` are this process's examples (all of them on one host); `batch_size` is
    global.
    """
    if len(inputs) != len(targets):
        raise ValueError(f"score: {len(inputs)} inputs but {len(targets)} targets")
    data_sh, local = _local_batch(batch_size, mesh)
    lengths = [[len(r) for r in inputs], [len(r) for r in targets]]
    batches = plan_batches(lengths, [input_length, target_length], local)
    batches = agree_batches(batches, local)

    def dispatch(k: int, batch: Batch) -> Any:
        eos = [config.eos_id]
        enc = pad_rows(batch_rows(inputs, batch, eos), batch.lengths[0], config.pad_id)
        tgt = pad_rows(batch_rows(targets, batch, eos), batch.lengths[1], config.pad_id)
        dec_in = shift_right(tgt, config.decoder_start_id)
        arrays = {
            "encoder_input_tokens": enc,
            "decoder_input_tokens": dec_in,
            "decoder_target_tokens": tgt,
        }
        return score_fn(params, config, part.to_global(arrays, data_sh), vocab_size)

    def unpack(batch: Batch, res: Any) -> list:
        return [
            {
                "sum_logprob": float(res["sum_logprob"][j]),
                "mean_logprob": float(res["mean_logprob"][j]),
                "num_tokens": int(res["num_tokens"][j]),
            }
            for j in range(batch.size)
        ]

    return run_pipelined(batches, dispatch, unpack, progress, data_sh)


def _local_batch(batch_size: int, mesh: Mesh) -> tuple[NamedSharding, int]:
    """(batch sharding, this process's rows per batch): the global batch is rounded up to a
    multiple of the data axis so it shards evenly."""
    d = mesh.shape[part.DATA_AXIS]
    rows = max(d, -(-batch_size // d) * d)
    sharding = part.batch_sharding(mesh)
    return sharding, rows // part.data_layout(sharding, rows)[1]


def _cut(tokens: np.ndarray, eos: int, pad: int) -> list[int]:
    """The tokens before EOS, padding dropped."""
    out = []
    for t in tokens.tolist():
        if t == eos:
            break
        if t != pad:
            out.append(t)
    return out
