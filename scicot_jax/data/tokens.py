"""Token-list helpers shared by the trainer feed, inference and the binaries (numpy only).

The special ids are the model's (``T5Config.pad_id``, ``eos_id``, ``decoder_start_id``); callers
pass them in, so a vocabulary with other ids needs no edit here.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np


def with_eos(tokens: Iterable[int], length: int, eos_id: int) -> list[int]:
    """``tokens`` cut to ``length - 1``, then EOS (SeqIO trims first, then appends EOS)."""
    return list(tokens)[: length - 1] + [eos_id]


def pad_rows(rows: Sequence[Sequence[int]], length: int, pad_id: int) -> np.ndarray:
    """int32 [len(rows), length]: each token list cut to ``length`` and right-padded."""
    out = np.full((len(rows), length), pad_id, np.int32)
    for i, r in enumerate(rows):
        r = list(r)[:length]
        out[i, : len(r)] = r
    return out


def shift_right(targets: np.ndarray, start_id: int) -> np.ndarray:
    """Decoder inputs: targets moved one position right along the last axis, ``start_id`` first."""
    out = np.empty_like(targets)
    out[..., 0] = start_id
    out[..., 1:] = targets[..., :-1]
    return out
