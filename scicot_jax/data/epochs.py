"""Training batches of an in-memory split in seeded epochs: the one order both trainers read.

Epoch e visits the examples in ``np.random.default_rng((seed, e)).permutation(n)``; unpacked,
batch k of an epoch is rows k*B..(k+1)*B of that order (a split smaller than a batch repeats to
fill it); packed, the epochs form one stream that ``packing`` packs best-fit. The pipeline's
in-process trainer (``pipeline.plan``) and the SeqIO feed's ``order="epochs"`` (the gin trainer)
both batch here, so the same pairs give the same batches either way.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator, Mapping, Sequence

import numpy as np

from scicot_jax.data import packing
from scicot_jax.data.tokens import shift_right


def padded_batches(
    inputs_BxL: np.ndarray,
    targets_BxL: np.ndarray,
    *,
    batch_size: int,
    seed: int | None,
    pad_id: int = 0,
    decoder_start_id: int = 0,
    start: int = 0,
    host: int = 0,
    hosts: int = 1,
) -> Iterator[dict[str, np.ndarray]]:
    """Endless global batches of padded rows from batch ``start`` on; each host yields its rows
    ``host::hosts``."""
    n = len(inputs_BxL)
    per_epoch = max(1, n // batch_size) if n >= batch_size else 1
    step = start
    while True:
        epoch, k = divmod(step, per_epoch)
        order = np.random.default_rng((seed, epoch)).permutation(n)
        if n < batch_size:  # tiny data: repeat to fill a batch
            order = np.resize(order, batch_size)
        idx = order[k * batch_size : (k + 1) * batch_size][host::hosts]
        yield padded_batch(inputs_BxL, targets_BxL, idx, pad_id, decoder_start_id)
        step += 1


def padded_batch(
    inputs_BxL: np.ndarray,
    targets_BxL: np.ndarray,
    idx: np.ndarray,
    pad_id: int = 0,
    decoder_start_id: int = 0,
) -> dict[str, np.ndarray]:
    """Rows ``idx`` as EncDecFeatureConverter's unpacked features."""
    tgt = targets_BxL[idx]
    return {
        "encoder_input_tokens": inputs_BxL[idx],
        "decoder_target_tokens": tgt,
        "decoder_input_tokens": shift_right(tgt, decoder_start_id),
        "decoder_loss_weights": (tgt != pad_id).astype(np.float32),
    }


def packed_batches(
    inputs: Sequence[np.ndarray],
    targets: Sequence[np.ndarray],
    lengths: Mapping[str, int],
    *,
    batch_size: int,
    seed: int | None,
    window: int = packing.DEFAULT_WINDOW,
    start: int = 0,
    host: int = 0,
    hosts: int = 1,
) -> Iterator[dict[str, np.ndarray]]:
    """Endless global batches of rows of ``lengths`` packed from the seeded epochs, positioned
    at batch ``start`` by replaying the stream (packing is a pure function of it)."""

    def examples() -> Iterator[dict[str, np.ndarray]]:
        for epoch in itertools.count():
            for i in np.random.default_rng((seed, epoch)).permutation(len(inputs)):
                yield {"inputs": inputs[i], "targets": targets[i]}

    rows = packing.pack_examples(examples(), lengths, window)
    for b in itertools.islice(packing.batch_rows(rows, batch_size), start, None):
        yield {k: v[host::hosts] for k, v in b.items()}
