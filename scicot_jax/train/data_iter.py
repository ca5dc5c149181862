"""Numpy batches -> global jax.Arrays, with resumable position and a device prefetch thread."""

from __future__ import annotations

import itertools
import logging
import queue
import threading
from collections.abc import Callable, Iterable, Iterator

import jax
import numpy as np
from jax.sharding import NamedSharding

from scicot_jax.runtime.partitioning import to_global  # noqa: F401 - its home; re-exported

log = logging.getLogger(__name__)

Batches = Iterable[dict[str, np.ndarray]] | Callable[[int], Iterable[dict[str, np.ndarray]]]


def open_batches(batches: Batches, start: int) -> Iterator[dict[str, np.ndarray]]:
    """An iterator positioned at batch `start`.

    `batches` is a factory `start -> iterable` (seeks itself, e.g. tf.data skip) or a plain
    iterable, which is advanced by reading and dropping `start` batches.
    """
    if callable(batches) and not hasattr(batches, "__iter__"):
        return iter(batches(start))
    it = iter(batches)
    if start:
        log.info("skipping %d already-trained batches of a plain iterator", start)
        for _ in itertools.islice(it, start):
            pass
    return it


class Prefetcher:
    """Moves the next `size` batches to devices on a background thread."""

    _DONE = object()

    def __init__(self, it: Iterator[dict[str, np.ndarray]], sharding: NamedSharding, size: int = 2):
        self._q: queue.Queue = queue.Queue(maxsize=max(size, 1))
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(it, sharding), daemon=True)
        self._thread.start()

    def _run(self, it: Iterator, sharding: NamedSharding) -> None:
        try:
            for batch in it:
                item = to_global(batch, sharding)
                while not self._stop.is_set():
                    try:
                        self._q.put(item, timeout=0.1)
                        break
                    except queue.Full:
                        continue
                if self._stop.is_set():
                    return
            self._q.put(self._DONE)
        except BaseException as e:  # noqa: BLE001 - re-raised on the consumer side
            self._q.put(e)

    def __iter__(self) -> Prefetcher:
        return self

    def __next__(self) -> dict[str, jax.Array]:
        item = self._q.get()
        if item is self._DONE:
            self._q.put(item)
            raise StopIteration
        if isinstance(item, BaseException):
            raise item
        return item

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
