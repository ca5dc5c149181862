"""The run's single writer: commits cache rows, then appends records, a group commit per batch.

Every response is committed to the cache before its record is appended, so after a crash only
the requests that were in flight are sent again.
"""

from __future__ import annotations

import asyncio
import queue
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from scicot_jax import disk_full
from scicot_jax.data.store import Key, RationaleRecord, RationaleStore, encode_record
from scicot_jax.teacher.batch import crash_point
from scicot_jax.teacher.cache import Cache
from scicot_jax.teacher.cache import Stats as CacheStats
from scicot_jax.teacher.cached_pass import Answered
from scicot_jax.teacher.protocol import GenRequest, GenResponse
from scicot_jax.teacher.report import Tally


@dataclass
class Write:
    """One item for the writer: responses, failures and records, written in queue order."""

    ok: list[tuple[GenRequest, GenResponse]] = field(default_factory=list)
    failed: list[tuple[GenRequest, str, int | None, str]] = field(default_factory=list)
    records: list[RationaleRecord] = field(default_factory=list)
    answered: Answered | None = None  # records the cache answered, encoded (cached_pass)
    done: threading.Event | None = None  # set once everything queued before it is written


class Writer(threading.Thread):
    """The single writer: commits cache rows, then appends records (group commit per batch)."""

    def __init__(
        self,
        cache_path: Path,
        store: RationaleStore,
        maxsize: int = 2048,
        stats: CacheStats | None = None,
        tally: Tally | None = None,
    ):
        super().__init__(name="teacher-writer", daemon=True)
        self.cache_path, self.store, self.stats = cache_path, store, stats
        self.tally = tally  # counts each record written, for the run's summary
        self.q: queue.Queue[Write | None] = queue.Queue(maxsize)
        self.error: BaseException | None = None

    def run(self) -> None:
        cache = Cache(self.cache_path)
        try:
            done, saved = False, time.monotonic()
            while not done:
                batch = [self.q.get()]
                while len(batch) < 512:
                    try:
                        batch.append(self.q.get_nowait())
                    except queue.Empty:
                        break
                done = any(b is None for b in batch)
                items = [b for b in batch if b is not None]
                ok = [x for b in items for x in b.ok]
                failed = [x for b in items for x in b.failed]
                # Counters alone (a cached pass writes no responses) are saved at most once a
                # second: every commit resets the page cache of every reader of the cache, and a
                # killed run's counters then lag its records by at most that second.
                now = time.monotonic()
                if ok or failed or done or now - saved >= 1.0:
                    try:
                        cache.write_batch(ok, failed, self.stats)
                    except Exception as e:  # SQLite's "disk is full" names no file
                        raise disk_full.naming(e, self.cache_path) from e
                    saved = now
                entries: list[tuple[Key, bytes]] = []
                for b in items:  # in queue order
                    if b.answered is not None:
                        entries += b.answered.entries
                    entries += [(r.key, encode_record(r)) for r in b.records]
                if entries:
                    try:
                        self.store.extend_encoded(entries)
                    except OSError as e:
                        raise disk_full.naming(e, self.store.records_path) from e
                    crash_point("records")
                    if self.tally is not None:
                        for b in items:
                            self.tally.add(b.records)
                            if b.answered is not None:
                                self.tally.merge(b.answered.tally)
                for b in items:
                    if b.done is not None:
                        b.done.set()
        except BaseException as e:  # surfaced to the loop by put()/close()
            self.error = e
        finally:
            cache.close()

    def put_blocking(self, item: Write) -> None:
        """put() for synchronous callers (the bulk cache path): waits while the queue is full."""
        while True:
            if self.error is not None:
                raise RuntimeError(f"teacher writer failed: {self.error}") from self.error
            try:
                self.q.put(item, timeout=0.1)
                return
            except queue.Full:
                continue

    def drain(self) -> None:
        """Wait until everything queued so far is committed (the store then knows it)."""
        if not self.is_alive():
            return
        done = threading.Event()
        self.put_blocking(Write(done=done))
        while not done.wait(0.1):
            if self.error is not None or not self.is_alive():
                raise RuntimeError(f"teacher writer failed: {self.error}") from self.error

    async def put(self, item: Write) -> None:
        """put() for the event loop: yields while the queue is full (backpressure)."""
        while True:
            if self.error is not None:
                raise RuntimeError(f"teacher writer failed: {self.error}") from self.error
            try:
                self.q.put_nowait(item)
                return
            except queue.Full:
                await asyncio.sleep(0.002)  # backpressure: the disk is slower than the network

    def close(self) -> None:
        """Write what is queued and end the thread; raises the writer's error, if any."""
        if self.is_alive():
            while self.is_alive():
                try:
                    self.q.put(None, timeout=0.1)
                    break
                except queue.Full:
                    continue
            self.join()
        if self.error is not None:
            raise RuntimeError(f"teacher writer failed: {self.error}") from self.error
