"""The run engine: (example, sample) jobs -> cache / limiter / backend -> a rationale store.

Streaming: jobs come from a generator and a fixed pool of workers pulls them, so memory does
not grow with the number of requests. Exactly-once: a job whose record is in the store is
skipped; every response is committed to the cache before its record is appended (both by one
writer thread), so after a crash only requests that were in flight are sent again.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sqlite3
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from scicot_jax import disk_full
from scicot_jax.data.cards import TaskCard, load_card
from scicot_jax.data.examples import Example
from scicot_jax.data.store import EXAMPLES_FILE, RationaleStore
from scicot_jax.files import atomic_open, try_lock
from scicot_jax.teacher.backends import Backend, make_backend, scrub
from scicot_jax.teacher.batch import BatchDriver
from scicot_jax.teacher.batch_clients import make_batch_client
from scicot_jax.teacher.cache import Cache
from scicot_jax.teacher.cached_pass import Answered, CacheReader, answered_chunks, pool_size
from scicot_jax.teacher.config import RunConfig
from scicot_jax.teacher.inputs import ExampleSource
from scicot_jax.teacher.jobs import JobRequests
from scicot_jax.teacher.leases import Leases
from scicot_jax.teacher.limiter import Limiter, Limits
from scicot_jax.teacher.manifest import Invocation, RunManifest
from scicot_jax.teacher.outcome import Outcome, Stopped
from scicot_jax.teacher.pricing import batch_price, price_for
from scicot_jax.teacher.progress import Progress, Stats
from scicot_jax.teacher.protocol import estimate_tokens
from scicot_jax.teacher.report import RUN_LOCK, Tally, accuracy_summary
from scicot_jax.teacher.sending import Sender, est_tokens
from scicot_jax.teacher.writer import Write, Writer

SUMMARY_SPILL = ".summary.marks"  # a run's per-record summary marks, until its summary
CHUNK = 512  # jobs looked up in the cache per query (and written per group commit)


class RunBusy(RuntimeError):
    """Another teacher run is writing the output directory."""


class TeacherRun:
    """One invocation of a teacher run over a source of examples."""

    def __init__(
        self,
        cfg: RunConfig,
        card: TaskCard | str,
        source: ExampleSource,
        cache_path: str | os.PathLike[str],
        out_dir: str | os.PathLike[str],
        *,
        backend: Backend | None = None,
        input_desc: dict[str, Any] | None = None,
    ):
        self.cfg = cfg
        self.card = load_card(card)
        self.source = source
        self.cache_path = Path(cache_path)
        self.out_dir = Path(out_dir)
        self._backend = backend
        self.input_desc = input_desc or {"type": "python"}
        self.requests = JobRequests(cfg, self.card)
        self.manifest = RunManifest(
            cfg, self.card, source, self.input_desc, self.out_dir, self.cache_path
        )
        self.price = price_for(cfg.model, cfg.price_in, cfg.price_out)
        self.stats = Stats()
        self.outcome = Outcome()
        self._pulled = 0  # jobs taken by workers so far: a job's place in the limiter's queue
        self._key: str | None = None
        self._invocation = Invocation(self.stats)
        # Names this invocation in the cache (its counters, its leases on requests in flight).
        self.invocation = self._invocation.id
        self.counters = self._invocation.counters

    @property
    def stopping(self) -> bool:
        """True once the run stops: no new request is sent, those in flight finish."""
        return self.outcome.stopping

    def stop(self, status: str, message: str) -> None:
        """Stop the run cleanly, ending with `status` and `message` (the first reason wins).

        For the batch driver (a budget reached, jobs cancelled) and the signal handler."""
        self.outcome.stop(status, message)

    # -- jobs -------------------------------------------------------------------------
    async def job(self, ex: Example, k: int, order: int | None = None) -> None:
        """Send job (ex, k)'s requests and write its record (or count it failed)."""
        first = self.requests.requests_for(ex, k)
        r1 = await self.sender.request(first, order)
        if r1 is None:
            self.stats.jobs_failed += 1
            return
        r2 = None
        if self.cfg.prompt == "zero_shot_cot":
            r2 = await self.sender.request(self.requests.step2_for(first, r1), order)
            if r2 is None:
                self.stats.jobs_failed += 1
                return
        await self.writer.put(Write(records=[self.requests.record_for(ex, k, first, r1, r2)]))
        self.stats.written += 1
        self.stats.truncated += r1.truncated

    def jobs(self, count_skipped: bool = True) -> Iterator[tuple[Example, int]]:
        """The jobs still to do, in input order; those the cache answers are written here (by
        worker processes on a large run: cached_pass)."""
        self.writer.drain()  # records queued by an earlier pass must count as stored
        n = pool_size(self.cfg, self.stats.jobs_total)
        with answered_chunks(self.reader, self._unstored(count_skipped), n) as answered:
            for chunk, answer in answered:
                yield from self._take(chunk, answer)
                if self.stopping:  # a Ctrl-C during a long cached pass ends it here
                    return

    def _unstored(self, count_skipped: bool) -> Iterator[list[tuple[Example, int]]]:
        """The jobs whose record is not stored yet, CHUNK at a time, in input order."""
        # An empty store holds none of the jobs; this pass writes each job at most once (ids
        # are unique), after visiting it: no job need be looked up (~3 us each).
        stored = len(self.store) > 0
        chunk: list[tuple[Example, int]] = []
        for ex in self.source():
            for k in range(self.cfg.samples):
                if stored and (ex.id, k) in self.store:
                    self.stats.jobs_skipped += count_skipped
                    continue
                chunk.append((ex, k))
                if len(chunk) == CHUNK:
                    yield chunk
                    chunk = []
        if chunk:
            yield chunk

    def _take(
        self, chunk: list[tuple[Example, int]], answer: Answered
    ) -> list[tuple[Example, int]]:
        """Queue the answered records (one group commit); return the jobs left to send."""
        if answer.entries:
            self.writer.put_blocking(Write(answered=answer))
            s = self.stats
            s.cache_hits += answer.hits
            s.written += len(answer.entries)
            s.truncated += answer.truncated
            self.progress.maybe_render()
        return [chunk[i] for i in answer.rest]

    async def _worker(self, jobs: Iterator[tuple[Example, int]]) -> None:
        n = 0
        while not self.stopping:
            try:
                ex, k = next(jobs)
                order = self._pulled = self._pulled + 1
            except StopIteration:
                return
            try:
                await self.job(ex, k, order)
            except Stopped:
                return
            n += 1
            self.progress.maybe_render()
            if n % 64 == 0:
                await asyncio.sleep(0)  # cache hits never suspend: let others run

    # -- the run ----------------------------------------------------------------------
    def quote(self) -> dict[str, Any]:
        """--dry-run: what would be sent and what it would cost; sends and writes nothing."""
        store = (
            RationaleStore.open(self.out_dir) if RationaleStore.is_run_dir(self.out_dir) else None
        )
        cache = Cache(self.cache_path, readonly=True) if self.cache_path.exists() else None
        q = {
            "jobs": 0,
            "already_done": 0,
            "cached_requests": 0,
            "requests_to_send": 0,
            "est_input_tokens": 0,
            "max_output_tokens": 0,
        }

        def need(prompt_tokens: int, max_out: int) -> None:
            q["requests_to_send"] += 1
            q["est_input_tokens"] += prompt_tokens
            q["max_output_tokens"] += max_out

        try:
            for ex in self.source():
                for k in range(self.cfg.samples):
                    q["jobs"] += 1
                    if store is not None and (ex.id, k) in store:
                        q["already_done"] += 1
                        continue
                    req = self.requests.requests_for(ex, k)
                    r1 = cache.get(req.key) if cache else None
                    if r1 is not None:
                        q["cached_requests"] += 1
                    else:
                        need(estimate_tokens(req.prompt), req.max_tokens)
                    if self.cfg.prompt != "zero_shot_cot":
                        continue
                    if r1 is None:  # step 2 repeats step 1's prompt and reasoning
                        need(est_tokens(req), self.cfg.answer_max_tokens)
                        continue
                    req2 = self.requests.step2_for(req, r1)
                    if cache is not None and cache.get(req2.key) is not None:
                        q["cached_requests"] += 1
                    else:
                        need(estimate_tokens(req2.prompt), req2.max_tokens)
        finally:
            if cache:
                cache.close()
        price = batch_price(self.price) if self.cfg.mode == "batch" else self.price
        return {
            "dry_run": True,
            "mode": self.cfg.mode,
            **q,
            "est_cost_usd_upper": round(
                price.cost(q["est_input_tokens"], q["max_output_tokens"]), 4
            ),
            "price_per_m_tokens": [price.input_per_m, price.output_per_m],
            "price_known": price.known,
            "model": self.cfg.model,
        }

    async def run(self) -> dict[str, Any]:
        """Do the run; returns the summary (status, counters, accuracy of the store)."""
        cfg = self.cfg
        # First: a bad key or endpoint is a configuration error before anything is written.
        online = cfg.mode == "online" or cfg.fallback == "online"
        made = self._backend is None and online  # batch mode alone needs no online client
        self.backend = (
            make_backend(
                cfg.backend,
                base_url=cfg.base_url,
                api=cfg.api,
                timeout=cfg.timeout,
                max_connections=cfg.concurrency,
                max_tokens_field=cfg.max_tokens_field,
            )
            if made
            else self._backend
        )
        self.batch_client = (
            make_batch_client(
                cfg.backend,
                base_url=cfg.base_url,
                api=cfg.api,
                timeout=cfg.timeout,
                max_tokens_field=cfg.max_tokens_field,
            )
            if cfg.mode == "batch"
            else None
        )
        self._key = getattr(self.backend or self.batch_client, "_key", None)
        try:
            self.cache = Cache(self.cache_path)  # an unusable cache fails before the run dir
            self.reader = CacheReader(self.requests, self.cache)
            try:
                self.out_dir.mkdir(parents=True, exist_ok=True)
                lock = _lock(self.out_dir)
                try:
                    return await self._run()
                finally:
                    os.close(lock)
            finally:
                self.cache.close()
        finally:
            if made:
                await self.backend.aclose()
            if self.batch_client is not None:
                self.batch_client.close()

    async def _run(self) -> dict[str, Any]:
        cfg = self.cfg
        existing = self.manifest.existing()
        # Bad input fails in the scan, before a manifest exists or anything is sent; the new
        # examples.jsonl replaces the old one only once the scan passed.
        with atomic_open(self.out_dir / EXAMPLES_FILE, "wb") as examples_file:
            scan = self.manifest.scan(existing, examples_file)
            # Opened after the scan: its key index and the scan's id hashes never coexist.
            self.store = (
                RationaleStore.open(self.out_dir)
                if existing is not None
                else RationaleStore.create(self.out_dir, self.manifest.new())
            )
        self.stats.jobs_total = scan["count"] * cfg.samples
        self._invocation.begin(
            self.store, self.cache, cfg, {"count": scan["count"], "sha256": scan["sha256"]}
        )
        # A run that starts with an empty store counts its summary as it writes (one pass
        # over the records fewer); a resumed run reads its store once at the end.
        spill = self.out_dir / SUMMARY_SPILL
        spill.unlink(missing_ok=True)  # a killed run's
        self._tally = Tally(spill) if len(self.store) == 0 else None
        self.writer = Writer(self.cache_path, self.store, stats=self.counters, tally=self._tally)
        self.writer.start()
        self.progress = Progress(self.stats, enabled=cfg.progress)
        self.limiter = Limiter(
            Limits(cfg.requests_per_minute, cfg.tokens_per_minute, cfg.concurrency)
        )
        # A lease outlives one attempt and its back-off; a dead holder's expires.
        self.leases = Leases(
            self.cache, self.invocation, cfg.timeout + cfg.backoff_cap + 60.0, self.outcome
        )
        self.sender = Sender(
            cfg,
            cache=self.cache,
            leases=self.leases,
            limiter=self.limiter,
            backend=self.backend,
            writer=self.writer,
            stats=self.stats,
            price=self.price,
            outcome=self.outcome,
            counters=self.counters,
            key=self._key,
        )
        error: BaseException | None = None
        out = self.outcome
        try:
            with _signals(self):
                if self.batch_client is not None:
                    await self._batch(self.batch_client)
                if cfg.mode == "online" or (cfg.fallback == "online" and not self.stopping):
                    jobs = self.jobs(count_skipped=cfg.mode == "online")
                    try:
                        workers = max(8, 2 * cfg.concurrency)
                        await asyncio.gather(*(self._worker(jobs) for _ in range(workers)))
                    finally:
                        jobs.close()  # a run stopped early shuts the cached pass's workers down
        except BaseException as e:
            error = e
            out.status, out.message = "error", scrub(f"{type(e).__name__}: {e}", self._key)
        finally:
            try:
                self.writer.close()
            except RuntimeError as e:
                error = error or e
                out.status, out.message = "error", scrub(str(e), self._key)
            try:  # leases expire by themselves: a full disk here must not hide the cause
                self.leases.release()
            except sqlite3.OperationalError as e:
                error = error or disk_full.naming(e, self.cache.path)
            if out.status == "complete" and self.stats.jobs_failed:
                out.status = "failures"
                causes = ", ".join(f"{n} {c}" for c, n in self.sender.causes.most_common())
                out.message = (
                    f"{self.stats.jobs_failed} job(s) failed"
                    + (f" (requests: {causes})" if causes else "")
                    + f"; `scicot-teacher failures {self.cache_path}` lists them; "
                    "re-run to retry them"
                )
                if self.sender.orphaned:
                    out.message += (
                        f"; {self.sender.orphaned} request(s) are in batch jobs of a stopped run, "
                        "not sent online: re-run that run (--mode batch) to collect them"
                    )
            self.progress.maybe_render(force=True)
            try:
                self._invocation.end(self.store, out.status, out.message)
            except OSError as e:
                if error is None or not disk_full.is_full_disk(e):
                    raise
            self.store.close()
            self.store.release_index()  # done writing: the summary's pass needs the memory
        if error is not None:
            raise error
        return self.summary()

    async def _batch(self, client: Any) -> None:
        """--mode batch: the batch driver; what keeps failing is failed (or goes online)."""
        driver = BatchDriver(self, client, self.cache)
        await driver.drive()
        if self.cfg.fallback != "online":
            self.stats.jobs_failed += driver.exhausted

    def summary(self) -> dict[str, Any]:
        """The finished run's summary: status, message, counters, accuracy of the store."""
        acc = (
            self._tally.summary(self.store.manifest)
            if self._tally is not None
            else accuracy_summary(self.store)
        )
        return {
            "status": self.outcome.status,
            "message": self.outcome.message,
            "out_dir": str(self.out_dir),
            "failure_causes": dict(self.sender.causes.most_common()),
            **self.stats.to_json(),
            **acc,
        }


def _lock(out_dir: Path) -> int:
    fd = try_lock(out_dir / RUN_LOCK)
    if fd is None:
        raise RunBusy(f"{out_dir}: another teacher run is writing here")
    return fd


@contextlib.contextmanager
def _signals(run: TeacherRun) -> Iterator[None]:
    """First Ctrl-C / SIGTERM: stop cleanly (in-flight requests finish); second: abort."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    loop = asyncio.get_running_loop()
    task = asyncio.current_task()

    # A plain signal handler, not loop.add_signal_handler: that one runs only when the loop
    # gets control, and a cached pass holds it for minutes. This one runs between any two
    # bytecodes of the main thread and only sets flags; the loop is woken to see them.
    def handler(signum: int, frame: object) -> None:
        if run.stopping and task is not None:
            loop.call_soon_threadsafe(task.cancel)
        run.stop("interrupted", "interrupted; re-run the same command to resume")
        loop.call_soon_threadsafe(lambda: None)

    old = {sig: signal.signal(sig, handler) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, previous in old.items():
            signal.signal(sig, previous)
