"""A set of (example_id, sample_index) keys in ~8 bytes each: 10M records fit in ~80 MB.

Keys are kept as 8-byte blake2b hashes in one array: a sorted prefix (binary search) and a
short unsorted tail (also in a small set of at most 64k entries, so its memory is constant),
sorted into the prefix in place when full (numpy's in-place sort, ~0.1 s per million). A query for a key that is not in the set answers True only if its 64-bit hash equals
a stored one: odds of about n / 2**64 per query (5e-13 at n = 10M). Two stored keys that share a
hash are told apart exactly (the store names them, see `add_collision`).
"""

from __future__ import annotations

import bisect
import hashlib
from array import array
from collections.abc import Iterable

import numpy as np

Key = tuple[str, int]
_MAX_TAIL = 1 << 16


def key_hash(example_id: str, sample_index: int) -> int:
    """8-byte hash of a record key."""
    data = f"{example_id}\x00{sample_index}".encode()
    return int.from_bytes(hashlib.blake2b(data, digest_size=8).digest(), "big")


def sort_in_place(hashes: array) -> None:
    """Sort an array('Q') without a copy (numpy's in-place introsort)."""
    if len(hashes) > 1:
        view = np.frombuffer(hashes, dtype=np.uint64)
        view.sort()
        del view  # release the buffer so the array can grow again


def sorted_duplicates(hashes: array) -> set[int]:
    """Sort `hashes` in place and return the values that occur more than once."""
    sort_in_place(hashes)
    if len(hashes) < 2:
        return set()
    view = np.frombuffer(hashes, dtype=np.uint64)
    out = {int(h) for h in view[1:][view[1:] == view[:-1]]}
    del view
    return out


class KeyIndex:
    """Membership of record keys at 8 bytes per key (see the module docstring)."""

    def __init__(self, hashes: array | None = None):
        """Start from `hashes` (already sorted, e.g. by `sorted_duplicates`), or empty."""
        self._hashes = hashes if hashes is not None else array("Q")
        self._sorted = len(self._hashes)
        self._tail: set[int] = set()
        self._exact: dict[int, set[Key]] = {}  # hashes shared by distinct stored keys

    def __len__(self) -> int:
        return len(self._hashes)

    def nbytes(self) -> int:
        return self._hashes.buffer_info()[1] * self._hashes.itemsize

    def add_collision(self, h: int, keys: Iterable[Key]) -> None:
        """Distinct stored keys share hash `h`: answer exactly for them."""
        self._exact.setdefault(h, set()).update(keys)

    def contains_hash(self, h: int) -> bool:
        if h in self._tail:
            return True
        i = bisect.bisect_left(self._hashes, h, 0, self._sorted)
        return i < self._sorted and self._hashes[i] == h

    def __contains__(self, key: object) -> bool:
        eid, k = key  # type: ignore[misc]
        h = key_hash(eid, k)
        if not self.contains_hash(h):
            return False
        exact = self._exact.get(h)
        return exact is None or key in exact

    def add_hash(self, h: int) -> None:
        """Add one key by its hash (the caller has checked that the key is new)."""
        self._hashes.append(h)
        self._tail.add(h)
        if len(self._tail) >= _MAX_TAIL:
            sort_in_place(self._hashes)
            self._sorted = len(self._hashes)
            self._tail.clear()
