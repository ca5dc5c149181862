"""SeqIO -> numpy batches for the trainer, eval and infer (the bridge that touches TF, outside train/).

seqio and tensorflow are imported lazily inside functions, so importing this module (and the
train step, which never imports it) keeps TF off accelerator hosts that only get numpy batches.
"""

from __future__ import annotations

import dataclasses
import importlib
import itertools
import logging
from collections.abc import Callable, Iterator
from typing import Any

import jax
import numpy as np

from scicot_jax.data import epochs, packing
from scicot_jax.data.tokens import pad_rows

log = logging.getLogger(__name__)

DEFAULT_TASK_MODULE = "scicot_jax.tasks"


@dataclasses.dataclass(frozen=True)
class DatasetConfig:
    """Which SeqIO task/mixture split to read and how (t5x's utils.DatasetConfig)."""

    mixture_or_task_name: str
    task_feature_lengths: dict
    split: str = "train"
    batch_size: int = 8  # global
    shuffle: bool = True
    seed: int | None = 42
    pack: bool = True
    # "best_fit": data.packing over a window of the next `packing_window` examples (>= 0.95
    # dense when the lengths suit the data, see packing.fit_lengths); "seqio":
    # EncDecFeatureConverter's own arrival-order packer.
    packer: str = "best_fit"
    packing_window: int = packing.DEFAULT_WINDOW
    # Best-fit packing: fit the rows' inputs/targets lengths to the split within this many
    # tokens per row (PACKED_ROW_TOKENS; fit_packed_lengths), replacing task_feature_lengths.
    packed_row_tokens: int | None = None
    use_cached: bool = False
    module: str | None = DEFAULT_TASK_MODULE  # MIXTURE_OR_TASK_MODULE, imported to register
    # Training order. "seqio": seqio's shuffle buffer over a repeated dataset; "epochs": the
    # split read once into memory, then seeded epochs (data.epochs), the order of the
    # pipeline's in-process trainer, so both trainers see the same batches.
    order: str = "seqio"


def import_task_module(module: str | None) -> None:
    """Imports the module(s) that register SeqIO tasks (comma-separated)."""
    for name in filter(None, (m.strip() for m in (module or "").split(","))):
        importlib.import_module(name)


def check_task(cfg: DatasetConfig) -> None:
    """Raises a one-line ValueError when the dataset's task or mixture is not registered."""
    import seqio

    import_task_module(cfg.module)
    try:
        seqio.get_mixture_or_task(cfg.mixture_or_task_name)
    except ValueError:
        raise ValueError(
            f"unknown SeqIO task or mixture {cfg.mixture_or_task_name!r} "
            f"(MIXTURE_OR_TASK_NAME; module {cfg.module!r} registers the known ones)"
        ) from None


def _hide_accelerators_from_tf(tf: Any) -> None:
    """TF only feeds data: keep it off the GPU memory JAX needs."""
    try:
        tf.config.set_visible_devices([], "GPU")
    except RuntimeError:  # TF's devices were already initialized by someone else
        pass


def _host_batch_size(global_batch: int) -> int:
    n = jax.process_count()
    if global_batch % n:
        raise ValueError(f"batch_size={global_batch} not divisible by {n} hosts")
    return global_batch // n


PACKERS = ("best_fit", "seqio")
ORDERS = ("seqio", "epochs")


def _dataset(
    cfg: DatasetConfig, num_epochs: int | None, shuffle: bool, converter: Any = None
) -> Any:
    import seqio
    import tensorflow as tf

    _hide_accelerators_from_tf(tf)
    import_task_module(cfg.module)
    converter = converter or seqio.EncDecFeatureConverter(pack=cfg.pack)
    ds = seqio.get_dataset(
        cfg.mixture_or_task_name,
        task_feature_lengths=dict(cfg.task_feature_lengths),
        dataset_split=cfg.split,
        shuffle=shuffle,
        num_epochs=num_epochs,
        feature_converter=converter,
        use_cached=cfg.use_cached,
        seed=cfg.seed,
        shard_info=seqio.ShardInfo(jax.process_index(), jax.process_count()),
    )
    return ds


def split_sizes(cfg: DatasetConfig, limit: int = 50_000) -> np.ndarray:
    """(n, 2) token counts (inputs, targets) of the split's first `limit` examples, in order and
    uncut up to 64k tokens; the same on every host (no sharding, no shuffling)."""
    import seqio
    import tensorflow as tf

    _hide_accelerators_from_tf(tf)
    import_task_module(cfg.module)
    ds = seqio.get_dataset(
        cfg.mixture_or_task_name,
        task_feature_lengths={"inputs": 1 << 16, "targets": 1 << 16},
        dataset_split=cfg.split,
        shuffle=False,
        num_epochs=1,
        feature_converter=seqio.PassThroughFeatureConverter(),
        use_cached=cfg.use_cached,
    )
    ds = ds.take(limit).map(
        lambda ex: tf.stack([tf.size(ex["inputs"]), tf.size(ex["targets"])]),
        num_parallel_calls=tf.data.AUTOTUNE,
    )
    return np.concatenate([b for b in ds.batch(4096).as_numpy_iterator()] or [np.zeros((0, 2))])


def fit_packed_lengths(cfg: DatasetConfig) -> DatasetConfig:
    """`cfg` with task_feature_lengths fitted to its split within `packed_row_tokens` tokens per
    row (packing.fit_lengths); `cfg` itself when packed_row_tokens is None. Deterministic and
    read unsharded, so every host (and a resumed run) fits the same lengths."""
    if cfg.packed_row_tokens is None:
        return cfg
    if not (cfg.pack and cfg.packer == "best_fit"):
        raise ValueError(
            f"DatasetConfig.packed_row_tokens={cfg.packed_row_tokens} needs pack=True and "
            f"packer='best_fit' (got pack={cfg.pack}, packer={cfg.packer!r})"
        )
    sizes = split_sizes(cfg)
    if not len(sizes):
        raise ValueError(f"{cfg.mixture_or_task_name}: split {cfg.split!r} has no examples")
    lengths = packing.fit_lengths(sizes, cfg.packed_row_tokens)
    log.info(
        "%s: packed rows of %d tokens fitted to inputs %d, targets %d (%d examples)",
        cfg.mixture_or_task_name,
        cfg.packed_row_tokens,
        lengths["inputs"],
        lengths["targets"],
        len(sizes),
    )
    return dataclasses.replace(cfg, task_feature_lengths=lengths, packed_row_tokens=None)


def train_batches(cfg: DatasetConfig) -> Callable[[int], Iterator[dict[str, np.ndarray]]]:
    """Factory `start_batch -> endless iterator` of this host's packed batches.

    The dataset is seeded, so skipping `start_batch` batches resumes exactly where a
    checkpointed run stopped (the best-fit packer replays the same stream to that batch).
    """
    if cfg.packer not in PACKERS:
        raise ValueError(f"DatasetConfig.packer={cfg.packer!r}; expected one of {PACKERS}")
    if cfg.order not in ORDERS:
        raise ValueError(f"DatasetConfig.order={cfg.order!r}; expected one of {ORDERS}")
    if cfg.packed_row_tokens is not None:  # fitting reads the whole split: once, by the caller
        raise ValueError(
            f"DatasetConfig.packed_row_tokens={cfg.packed_row_tokens}: fit the lengths first "
            "(fit_packed_lengths) and pass the fitted config on"
        )
    if cfg.order == "epochs":
        return epoch_batches(cfg)
    if cfg.pack and cfg.packer == "best_fit":
        return lambda start: itertools.islice(best_fit_batches(cfg), start, None)

    def make(start: int) -> Iterator[dict[str, np.ndarray]]:
        ds = _dataset(cfg, None, cfg.shuffle).batch(
            _host_batch_size(cfg.batch_size), drop_remainder=True
        )
        if start:
            ds = ds.skip(start)
        return ds.prefetch(2).as_numpy_iterator()

    return make


def epoch_batches(cfg: DatasetConfig) -> Callable[[int], Iterator[dict[str, np.ndarray]]]:
    """order="epochs": the whole split in memory, in order, on every host; batches in seeded
    epochs (``data.epochs``: padded to task_feature_lengths, or packed best-fit into rows of
    them from examples read uncut, as the in-process trainer packs)."""
    import seqio
    import tensorflow as tf

    _hide_accelerators_from_tf(tf)
    import_task_module(cfg.module)
    lengths = dict(cfg.task_feature_lengths)
    ds = seqio.get_dataset(
        cfg.mixture_or_task_name,
        task_feature_lengths={"inputs": 1 << 16, "targets": 1 << 16} if cfg.pack else lengths,
        dataset_split=cfg.split,
        shuffle=False,
        num_epochs=1,
        feature_converter=seqio.PassThroughFeatureConverter(),
        use_cached=cfg.use_cached,
    )
    rows = [(ex["inputs"], ex["targets"]) for ex in ds.as_numpy_iterator()]
    if not rows:
        raise ValueError(f"{cfg.mixture_or_task_name}: split {cfg.split!r} has no examples")
    inputs, targets = ([np.asarray(r[k], np.int32) for r in rows] for k in (0, 1))
    at = {"batch_size": cfg.batch_size, "seed": cfg.seed}
    at |= {"host": jax.process_index(), "hosts": jax.process_count()}
    if cfg.pack:
        return lambda start: epochs.packed_batches(
            inputs, targets, lengths, window=cfg.packing_window, start=start, **at
        )
    enc, dec = pad_rows(inputs, lengths["inputs"], 0), pad_rows(targets, lengths["targets"], 0)
    return lambda start: epochs.padded_batches(enc, dec, start=start, **at)


def best_fit_batches(cfg: DatasetConfig) -> Iterator[dict[str, np.ndarray]]:
    """This host's endless batches of best-fit packed rows of the shuffled, repeated examples."""
    import seqio

    ds = _dataset(cfg, None, cfg.shuffle, seqio.PassThroughFeatureConverter())
    ds = ds.map(lambda ex: {"inputs": ex["inputs"], "targets": ex["targets"]})
    rows = packing.pack_examples(
        _unbatch(ds.padded_batch(256).prefetch(2).as_numpy_iterator()),
        cfg.task_feature_lengths,
        cfg.packing_window,
    )
    return packing.batch_rows(rows, _host_batch_size(cfg.batch_size))


def _unbatch(batches: Iterator[dict[str, np.ndarray]]) -> Iterator[dict[str, np.ndarray]]:
    """Zero-padded example batches -> examples (tf.data hands over a batch far faster than its
    rows one by one; token id 0 is padding in SeqIO)."""
    for b in batches:
        n = {k: (v != 0).sum(axis=1) for k, v in b.items()}
        for i in range(len(n["inputs"])):
            yield {k: v[i, : n[k][i]] for k, v in b.items()}


def eval_batches(cfg: DatasetConfig) -> Callable[[], Iterator[dict[str, np.ndarray]]]:
    """Factory of one finite, unshuffled pass (last batch padded with empty rows)."""

    def make() -> Iterator[dict[str, np.ndarray]]:
        ds = _dataset(cfg, 1, False)
        bs = _host_batch_size(cfg.batch_size)
        for b in ds.batch(bs).as_numpy_iterator():
            yield pad_batch(b, bs)

    return make


def pad_batch(batch: dict[str, np.ndarray], rows: int) -> dict[str, np.ndarray]:
    """Pads every feature with zero rows (zero tokens carry no loss weight) to `rows`."""
    out = {}
    for k, x in batch.items():
        if x.shape[0] < rows:
            x = np.concatenate([x, np.zeros((rows - x.shape[0],) + x.shape[1:], x.dtype)])
        out[k] = x
    return out


def task_examples(
    name: str,
    split: str,
    feature_lengths: dict,
    module: str | None = None,
    limit: int | None = None,
    *,
    use_cached: bool = False,
    shard: tuple[int, int] = (0, 1),
) -> tuple[list[dict[str, Any]], Any]:
    """Preprocessed examples of a task split, in order, with ids and texts; plus the task.

    use_cached reads the SeqIO cache (seqio's cache_tasks_main); shard=(index, count) reads
    only that shard of the split (seqio.ShardInfo: examples index, index + count, ... of a
    single-file source; a pod host's part, t5x infer's shard_id/num_shards), `limit` of them.
    Each dict has `id` (else "<split>-<position in the split>"), `inputs`/`targets` (token
    lists, trimmed), `inputs_pretokenized`, `targets_pretokenized` (str) and the task's other
    string fields (for postprocessing).
    """
    import seqio
    import tensorflow as tf

    _hide_accelerators_from_tf(tf)
    import_task_module(module)
    task = seqio.get_mixture_or_task(name)
    ds = task.get_dataset(
        dict(feature_lengths),
        split=split,
        shuffle=False,
        num_epochs=1,
        use_cached=use_cached,
        shard_info=seqio.ShardInfo(*shard) if shard != (0, 1) else None,
    )
    out = []
    for i, ex in enumerate(ds.as_numpy_iterator()):
        if limit is not None and i >= limit:
            break
        row = {k: _py(v) for k, v in ex.items()}
        row.setdefault("id", f"{split}-{shard[0] + i * shard[1]}")
        out.append(row)
    return out, task


def sub_tasks(name: str, module: str | None = None) -> list[Any]:
    """The task itself, or a mixture's tasks (each is evaluated separately, as in t5x)."""
    import seqio

    import_task_module(module)
    obj = seqio.get_mixture_or_task(name)
    return list(obj.tasks) if isinstance(obj, seqio.Mixture) else [obj]


def _py(v: Any) -> Any:
    if isinstance(v, bytes):
        return v.decode("utf-8")
    if isinstance(v, np.ndarray):
        if v.dtype.kind in "SO":
            return [_py(x) for x in v.tolist()]
        return v.tolist()
    if isinstance(v, np.generic):
        return v.item()
    return v
