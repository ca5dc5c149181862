"""The run engine: (example, sample) jobs -> cache / limiter / backend -> a rationale store.

Streaming: jobs come from a generator and a fixed pool of workers pulls them, so memory does
not grow with the number of requests. Exactly-once: a job whose record is in the store is
skipped; every response is committed to the cache before its record is appended (both by one
writer thread), so after a crash only requests that were in flight are sent again.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import math
import os
import queue
import signal
import socket
import sqlite3
import threading
import time
import uuid
from array import array
from collections import Counter
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import IO, Any
from urllib.parse import urlsplit, urlunsplit

from scicot_jax import disk_full
from scicot_jax.data import grading
from scicot_jax.data.cards import TaskCard, load_card
from scicot_jax.data.examples import Example
from scicot_jax.data.store import EXAMPLES_FILE, Key, RationaleRecord, RationaleStore, encode_record
from scicot_jax.files import atomic_open, try_lock
from scicot_jax.teacher import prompts
from scicot_jax.teacher.backends import Backend, make_backend, provider_name, scrub
from scicot_jax.teacher.batch import crash_point
from scicot_jax.teacher.batch_clients import make_batch_client
from scicot_jax.teacher.cache import Cache
from scicot_jax.teacher.cache import Stats as CacheStats
from scicot_jax.teacher.cached_pass import Answered, answered_chunks
from scicot_jax.teacher.inputs import ExampleSource, InputError, duplicate_hashes, id_hash
from scicot_jax.teacher.limiter import Limiter, Limits, backoff_delay
from scicot_jax.teacher.pricing import batch_price, price_for
from scicot_jax.teacher.progress import Progress, Stats
from scicot_jax.teacher.protocol import (
    FatalRequestError,
    GenRequest,
    GenResponse,
    QuotaExhausted,
    RateLimited,
    TeacherError,
    TransientError,
    estimate_tokens,
)
from scicot_jax.teacher.report import (
    RUN_LOCK,
    Tally,
    accuracy_summary,
    failure_cause,
    mark_interrupted,
)

# Fields whose change would change the requests: a resumed run must keep them.
SIGNATURE_FIELDS = (
    "provider",
    "model",
    "prompt",
    "temperature",
    "max_tokens",
    "answer_max_tokens",
    "answer_temperature",
    "answer_trigger",
    "seed",
)
SUMMARY_SPILL = ".summary.marks"  # a run's per-record summary marks, until its summary
CHUNK = 512  # jobs looked up in the cache per query (and written per group commit)
EXIT_CODES = {
    "complete": 0,
    "failures": 1,
    "failing": 1,
    "max_cost": 3,
    "max_requests": 3,
    "quota": 4,
    "auth": 5,
    "interrupted": 130,
    "cancelled": 130,
}


# RunConfig field -> (its command-line flag, minimum, maximum, minimum excluded); None: unset.
NUMERIC_SETTINGS: dict[str, tuple[str, float, float | None, bool]] = {
    "samples": ("--samples", 1, None, False),
    "temperature": ("--temperature", 0.0, 2.0, False),
    "max_tokens": ("--max-tokens", 1, None, False),
    "answer_max_tokens": ("--answer-max-tokens", 1, None, False),
    "answer_temperature": ("--answer-temperature", 0.0, 2.0, False),
    "timeout": ("--timeout", 0.0, None, True),
    "requests_per_minute": ("--rpm", 0.0, None, False),
    "tokens_per_minute": ("--tpm", 0.0, None, False),
    "concurrency": ("--concurrency", 1, None, False),
    "workers": ("--workers", 1, None, False),
    "max_retries": ("--max-retries", 0, None, False),
    "max_throttle_retries": ("max_throttle_retries", 0, None, False),
    "max_consecutive_failures": ("max_consecutive_failures", 1, None, False),
    "max_cost": ("--max-cost", 0.0, None, False),
    "max_requests": ("--max-requests", 1, None, False),
    "price_in": ("--price-in", 0.0, None, False),
    "price_out": ("--price-out", 0.0, None, False),
}


def check_number(
    flag: str, value: float | None, lo: float, hi: float | None = None, lo_open: bool = False
) -> None:
    """Raises a one-line ValueError naming `flag` unless value is finite and within bounds."""
    if value is None:
        return
    ok = (
        isinstance(value, int | float)
        and not isinstance(value, bool)
        and math.isfinite(value)
        and (value > lo if lo_open else value >= lo)
        and (hi is None or value <= hi)
    )
    if not ok:
        bound = f"> {lo:g}" if lo_open else f">= {lo:g}"
        bound = f"between {lo:g} and {hi:g}" if hi is not None else bound
        raise ValueError(f"{flag} must be a number {bound}, got {value!r}")


@dataclass
class RunConfig:
    """Everything that shapes a teacher run (limits included)."""

    backend: str
    model: str
    prompt: str = "zero_shot_cot"
    samples: int = 1
    temperature: float = 0.0
    max_tokens: int = 256
    answer_max_tokens: int = 32  # zero-shot step 2 (answer extraction)
    answer_temperature: float = 0.0
    answer_trigger: str = prompts.DEFAULT_TRIGGER
    exemplars: str | None = None  # few_shot: JSONL of worked examples
    seed: int = 0
    api: str = "chat"  # openai route: chat | completions
    max_tokens_field: str = "max_tokens"  # openai: "max_completion_tokens" for o-series models
    base_url: str | None = None
    split: str = "train"
    timeout: float = 60.0
    requests_per_minute: float = 0.0
    tokens_per_minute: float = 0.0
    concurrency: int = 32
    workers: int | None = None  # processes answering from the cache (None: cached_pass decides)
    max_retries: int = 6  # transient failures per request
    max_throttle_retries: int = 50  # 429s per request
    max_consecutive_failures: int = 50  # then stop: the endpoint is down or misconfigured
    backoff_base: float = 0.5
    backoff_cap: float = 30.0
    max_cost: float | None = None
    max_requests: int | None = None
    price_in: float | None = None
    price_out: float | None = None
    progress: bool = True
    mode: str = "online"  # online | batch (the provider's batch API, half price, hours)
    fallback: str = "none"  # batch: none | online (requests that keep failing in batches)
    batch_poll_s: float = 30.0
    batch_max_requests: int | None = None  # per job; None: the provider's documented limit
    batch_attempts: int = 3  # batch jobs a request may fail in before it is given up

    def __post_init__(self) -> None:
        if self.prompt not in prompts.PROMPT_KINDS:
            raise ValueError(f"unknown prompt {self.prompt!r}; expected {prompts.PROMPT_KINDS}")
        for name, (flag, lo, hi, lo_open) in NUMERIC_SETTINGS.items():
            check_number(flag, getattr(self, name), lo, hi, lo_open)
        if self.prompt == "few_shot" and not self.exemplars:
            raise ValueError("prompt few_shot needs exemplars (--exemplars FILE.jsonl)")
        if self.mode not in ("online", "batch") or self.fallback not in ("none", "online"):
            raise ValueError(f"mode {self.mode!r} / fallback {self.fallback!r}: unknown")
        if self.batch_poll_s <= 0 or self.batch_attempts < 1:
            raise ValueError("batch_poll_s must be > 0 and batch_attempts >= 1")

    @property
    def provider(self) -> str:
        return provider_name(self.backend, self.api)

    def signature(self) -> dict[str, Any]:
        d = {k: getattr(self, k) for k in SIGNATURE_FIELDS}
        if self.exemplars:
            d["exemplars_sha256"] = hashlib.sha256(Path(self.exemplars).read_bytes()).hexdigest()
        return d


class RunMismatch(ValueError):
    """The output directory holds a run made with different settings or examples."""


class RunBusy(RuntimeError):
    """Another teacher run is writing the output directory."""


class _Stopped(Exception):
    """Raised inside a job when the run is stopping (limit, quota, interrupt)."""


class _Orphaned(Exception):
    """The request is in a batch job whose run stopped: the provider may answer it there, so it
    is not sent online (re-running that batch run collects it)."""


def derive_seed(base: int, example_id: str, sample_index: int) -> int:
    """Per-sample seed: distinct per (example, sample), stable across runs."""
    h = hashlib.sha256(f"{base}\x00{example_id}\x00{sample_index}".encode()).digest()
    return int.from_bytes(h[:4], "big") & 0x7FFFFFFF


@dataclass
class _Write:
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
        self.q: queue.Queue[_Write | None] = queue.Queue(maxsize)
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

    def put_blocking(self, item: _Write) -> None:
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
        self.put_blocking(_Write(done=done))
        while not done.wait(0.1):
            if self.error is not None or not self.is_alive():
                raise RuntimeError(f"teacher writer failed: {self.error}") from self.error

    async def put(self, item: _Write) -> None:
        while True:
            if self.error is not None:
                raise RuntimeError(f"teacher writer failed: {self.error}") from self.error
            try:
                self.q.put_nowait(item)
                return
            except queue.Full:
                await asyncio.sleep(0.002)  # backpressure: the disk is slower than the network

    def close(self) -> None:
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
        self.exemplars = prompts.load_exemplars(cfg.exemplars) if cfg.exemplars else ()
        self.price = price_for(cfg.model, cfg.price_in, cfg.price_out)
        self.stats = Stats()
        self.status = "complete"
        self.message = ""
        self.stopping = False
        self._reserved_cost = 0.0
        self._failing = 0  # consecutive failed requests
        self._causes: Counter[str] = Counter()  # failed requests by cause (error, status)
        self._pulled = 0  # jobs taken by workers so far: a job's place in the limiter's queue
        self._orphaned = 0  # requests left to a stopped batch run's open jobs
        self._key: str | None = None
        # Names this invocation in the cache (its counters, its leases on requests in flight).
        self.invocation = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        # A lease outlives one attempt and its back-off; a dead holder's expires.
        self._lease_ttl = cfg.timeout + cfg.backoff_cap + 60.0
        self._provider = cfg.provider  # asked per request: computed once
        kind = "teacher_step2" if cfg.prompt == "zero_shot_cot" else "rationale"
        self._grader = grading.grader_for(self.card, kind)

    # -- requests ---------------------------------------------------------------------
    def requests_for(self, ex: Example, k: int) -> GenRequest:
        """The first request of job (ex, k); zero-shot step 2 follows from its response."""
        cfg = self.cfg
        seed = derive_seed(cfg.seed, ex.id, k)
        if cfg.prompt == "zero_shot_cot":
            text, stop = prompts.zero_shot_step1(ex), ()
        elif cfg.prompt == "answer_conditioned":
            text, stop = prompts.answer_conditioned(ex), ()
        else:
            text, stop = prompts.few_shot(ex, self.exemplars), prompts.FEW_SHOT_STOP
        return GenRequest(
            self._provider, cfg.model, text, cfg.temperature, cfg.max_tokens, seed, k, stop
        )

    def step2_for(self, first: GenRequest, reasoning: GenResponse) -> GenRequest:
        cfg = self.cfg
        text = prompts.zero_shot_step2(first.prompt, reasoning.text, cfg.answer_trigger)
        return GenRequest(
            self._provider,
            cfg.model,
            text,
            cfg.answer_temperature,
            cfg.answer_max_tokens,
            first.seed,
            first.sample_index,
        )

    def _est_tokens(self, req: GenRequest) -> int:
        return estimate_tokens(req.prompt) + req.max_tokens

    def _est_cost(self, req: GenRequest) -> float:
        return self.price.cost(estimate_tokens(req.prompt), req.max_tokens)

    def _stop(self, status: str, message: str) -> None:
        if not self.stopping:
            self.stopping, self.status, self.message = True, status, message

    def _check_budget(self, req: GenRequest) -> None:
        cfg, s = self.cfg, self.stats
        if cfg.max_requests is not None and s.sent >= cfg.max_requests:
            self._stop("max_requests", f"stopped after {s.sent} requests (--max-requests)")
        elif cfg.max_cost is not None and (
            s.cost_usd + self._reserved_cost + self._est_cost(req) > cfg.max_cost
        ):
            self._stop(
                "max_cost",
                f"stopped at ${s.cost_usd:.4f}: the next request could pass "
                f"--max-cost ${cfg.max_cost:g}",
            )
        if self.stopping:
            raise _Stopped

    def counters(self) -> tuple[str, dict[str, Any]]:
        """(invocation id, counters): what the cache saves as this invocation's stats."""
        return self.invocation, self.stats.to_json()

    async def _lease(self, req: GenRequest) -> GenResponse | None:
        """Waits until this run holds the request's lease (another run sharing the cache may
        be sending it, online or in a batch job); returns the response instead if that run
        cached it meanwhile. Raises _Orphaned for a batch job whose run stopped."""
        wait = 0.02
        while True:
            state = self.cache.lease(req.key, self.invocation, self._lease_ttl)
            if state == "leased":
                return None
            if state == "hit" and (resp := self.cache.get(req.key)) is not None:
                return resp
            if state == "orphan":
                raise _Orphaned
            if self.stopping:
                raise _Stopped
            await asyncio.sleep(wait)
            wait = min(0.5, wait * 1.5)

    async def request(self, req: GenRequest, order: int | None = None) -> GenResponse | None:
        """Cached response, or send with limits and retries; None if it failed for good.

        `order` (the job's pull order) ranks the request among those waiting for a slot."""
        try:
            return await self._request(req, order)
        except _Orphaned:
            self._orphaned += 1
            return None

    async def _request(self, req: GenRequest, order: int | None) -> GenResponse | None:
        hit = self.cache.get(req.key) or await self._lease(req)
        if hit is not None:
            self.stats.cache_hits += 1
            return hit
        est, est_cost = self._est_tokens(req), self._est_cost(req)
        transient = throttled = 0
        while True:
            self._check_budget(req)  # early: do not queue for a slot we cannot use
            granted = await self.limiter.acquire(est, order)
            try:  # again, with no await before the send: others may have spent the budget
                self._check_budget(req)
            except _Stopped:
                await self.limiter.release(est, None)
                raise
            s = self.stats
            s.sent += 1
            # Renews the lease and saves the counters: a request is counted before it is sent.
            if (
                self.cache.lease(req.key, self.invocation, self._lease_ttl, self.counters)
                != "leased"
            ):
                # Queued past the lease's expiry, another run took the request: not ours now.
                s.sent -= 1
                await self.limiter.release(est, 0)
                if (hit := await self._lease(req)) is not None:
                    s.cache_hits += 1
                    return hit
                continue
            s.in_flight += 1
            self._reserved_cost += est_cost
            used, delay = None, 0.0
            try:
                resp = await self.backend.generate(req)
                used = resp.input_tokens + resp.output_tokens
            except RateLimited as e:
                s.throttled += 1
                throttled += 1
                self.limiter.on_throttle(granted, e.retry_after)
                if throttled > self.cfg.max_throttle_retries:
                    return await self._fail(req, e)
                if e.retry_after is None:
                    delay = backoff_delay(
                        throttled - 1, self.cfg.backoff_base, self.cfg.backoff_cap
                    )
                continue
            except QuotaExhausted as e:
                self._stop(
                    "quota",
                    f"{e} -- the provider's daily quota is spent; re-run the "
                    "same command when it resets: finished work is kept.",
                )
                raise _Stopped from None
            except TransientError as e:
                transient += 1
                if transient > self.cfg.max_retries:
                    return await self._fail(req, e)
                s.retries += 1
                delay = backoff_delay(transient - 1, self.cfg.backoff_base, self.cfg.backoff_cap)
                continue
            except FatalRequestError as e:
                return await self._fail(req, e)
            except Exception as e:  # unforeseen client errors: retried, then recorded
                transient += 1
                err = TransientError(scrub(f"unexpected {type(e).__name__}: {e}", self._key, 500))
                if transient > self.cfg.max_retries:
                    return await self._fail(req, err)
                s.retries += 1
                delay = backoff_delay(transient - 1, self.cfg.backoff_base, self.cfg.backoff_cap)
                continue
            finally:
                s.in_flight -= 1
                self._reserved_cost -= est_cost
                await self.limiter.release(est, used)
                if delay:
                    await asyncio.sleep(delay)
            self.limiter.on_success()
            self._failing = 0
            s.ok += 1
            s.input_tokens += resp.input_tokens
            s.output_tokens += resp.output_tokens
            s.cost_usd += self.price.cost(resp.input_tokens, resp.output_tokens)
            await self.writer.put(_Write(ok=[(req, resp)]))
            return resp

    async def _fail(self, req: GenRequest, e: TeacherError) -> None:
        self.stats.failures += 1
        self._failing += 1
        msg = scrub(str(e), self._key, 1000)
        self._causes[failure_cause(type(e).__name__, e.status, msg)] += 1
        await self.writer.put(_Write(failed=[(req, type(e).__name__, e.status, msg)]))
        # Fail fast where every further request would fail the same way (and may cost).
        if e.status in (401, 403):
            self._stop("auth", f"the provider refused the credentials: {msg[:300]}")
        elif self._failing >= self.cfg.max_consecutive_failures:
            self._stop("failing", f"{self._failing} requests in a row failed; last: {msg[:300]}")
        return None

    # -- jobs -------------------------------------------------------------------------
    async def job(self, ex: Example, k: int, order: int | None = None) -> None:
        first = self.requests_for(ex, k)
        r1 = await self.request(first, order)
        if r1 is None:
            self.stats.jobs_failed += 1
            return
        r2 = None
        if self.cfg.prompt == "zero_shot_cot":
            r2 = await self.request(self.step2_for(first, r1), order)
            if r2 is None:
                self.stats.jobs_failed += 1
                return
        await self.writer.put(_Write(records=[self.record_for(ex, k, first, r1, r2)]))
        self.stats.written += 1
        self.stats.truncated += r1.truncated

    def record_for(
        self, ex: Example, k: int, first: GenRequest, r1: GenResponse, r2: GenResponse | None
    ) -> RationaleRecord:
        """The record of job (ex, k) from its responses (r2: zero-shot step 2's)."""
        cfg = self.cfg
        extra: dict[str, Any] = {"seed": first.seed, "finish_reason": r1.finish_reason}
        tokens_in, tokens_out = r1.input_tokens, r1.output_tokens
        if r2 is not None:
            tokens_in, tokens_out = tokens_in + r2.input_tokens, tokens_out + r2.output_tokens
            extra["answer_completion"] = r2.text
            rationale = r1.text.strip()
            pred, ok = self._grader.grade(r2.text, ex.answer, ex.choices)
        else:
            text = r1.text.split("\nQ:")[0] if cfg.prompt == "few_shot" else r1.text
            rationale = text.strip()
            pred, ok = self._grader.grade(text, ex.answer, ex.choices)
        if r1.truncated:
            extra["truncated"] = True
        return RationaleRecord(
            example_id=ex.id,
            sample_index=k,
            rationale=rationale,
            answer=pred,
            correct=ok,
            source=f"teacher:{cfg.model}",
            prompt_kind=cfg.prompt,
            temperature=cfg.temperature,
            input_tokens=tokens_in,
            output_tokens=tokens_out,
            split=cfg.split,
            extra=extra,
        )

    def jobs(self, count_skipped: bool = True) -> Iterator[tuple[Example, int]]:
        """The jobs still to do, in input order; those the cache answers are written here (by
        worker processes on a large run: cached_pass)."""
        self.writer.drain()  # records queued by an earlier pass must count as stored
        with answered_chunks(self, self._unstored(count_skipped)) as answered:
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

    def cached_responses(
        self, chunk: list[tuple[Example, int]]
    ) -> list[tuple[GenRequest, GenResponse | None, GenRequest | None, GenResponse | None]]:
        """Per job: (first request, its cached response, step-2 request, its cached response)."""
        firsts = [self.requests_for(ex, k) for ex, k in chunk]
        hits = self.cache.get_many([r.key for r in firsts])
        seconds: list[GenRequest | None] = [None] * len(firsts)
        if self.cfg.prompt == "zero_shot_cot":
            for i, r in enumerate(firsts):
                if r.key in hits:
                    seconds[i] = self.step2_for(r, hits[r.key])
            hits.update(self.cache.get_many([r.key for r in seconds if r is not None]))
        return [
            (r, hits.get(r.key), r2, hits.get(r2.key) if r2 is not None else None)
            for r, r2 in zip(firsts, seconds, strict=True)
        ]

    def answer_from_cache(self, chunk: list[tuple[Example, int]]) -> Answered:
        """The records of the jobs the cache answers fully, encoded, and the others' places."""
        answered = Answered()
        two_step = self.cfg.prompt == "zero_shot_cot"
        records = []
        for i, ((ex, k), (first, r1, _, r2)) in enumerate(
            zip(chunk, self.cached_responses(chunk), strict=True)
        ):
            if r1 is None or (two_step and r2 is None):
                answered.rest.append(i)
                continue
            answered.truncated += r1.truncated
            records.append(self.record_for(ex, k, first, r1, r2))
        answered.hits = len(records) * (1 + two_step)
        answered.entries = [(r.key, encode_record(r)) for r in records]
        answered.tally.add(records)
        return answered

    def _take(
        self, chunk: list[tuple[Example, int]], answer: Answered
    ) -> list[tuple[Example, int]]:
        """Queue the answered records (one group commit); return the jobs left to send."""
        if answer.entries:
            self.writer.put_blocking(_Write(answered=answer))
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
            except _Stopped:
                return
            n += 1
            self.progress.maybe_render()
            if n % 64 == 0:
                await asyncio.sleep(0)  # cache hits never suspend: let others run

    # -- preparation -------------------------------------------------------------------
    def _scan(self, manifest: dict[str, Any] | None, write_to: IO[bytes] | None) -> dict[str, Any]:
        """One pass over the examples: count, digest, duplicates, examples.jsonl."""
        # 8 bytes per id (not a set of str): duplicates are found by sorting, memory stays small.
        digest, n, hashes = hashlib.sha256(), 0, array("Q")
        old = (manifest.get("examples") or {}) if manifest else {}
        old_n, prefix = int(old.get("count", 0)), None
        for ex in self.source():
            line = (ex.json_line() + "\n").encode()  # a resumed run matches their sha256
            hashes.append(id_hash(ex.id))
            digest.update(line)
            n += 1
            if n == old_n:
                prefix = digest.hexdigest()
            if write_to:
                write_to.write(line)
        if n == 0:
            raise InputError(f"the input has no examples ({json.dumps(self.input_desc)})")
        self._check_unique(hashes)
        del hashes
        if old_n and (n < old_n or prefix != old.get("sha256")):
            raise RunMismatch(
                f"{self.out_dir}: the run was made from {old_n} other examples; the input "
                f"({n} examples) must repeat them first (or use a new --out)"
            )
        return {"count": n, "sha256": digest.hexdigest()}

    def _check_unique(self, hashes: array) -> None:
        dup = duplicate_hashes(hashes)
        if dup:
            bad = set(sorted(dup)[:5])
            names = sorted({ex.id for ex in self.source() if id_hash(ex.id) in bad})
            raise InputError(f"duplicate example id(s) in the input: {names}")

    def _manifest(self) -> dict[str, Any]:
        cfg = self.cfg
        return {
            "kind": "teacher",
            "card": self._card_ref(),
            "task": self.card.name,
            "answer_type": self.card.answer_type,
            "compat": self.card.compat,
            "split": cfg.split,
            "input": self.input_desc,
            "teacher": {
                "backend": cfg.backend,
                "provider": cfg.provider,
                "model": cfg.model,
                "base_url": _safe_url(cfg.base_url),
            },
            "prompt": cfg.prompt,
            "samples": cfg.samples,
            "temperature": cfg.temperature,
            "signature": cfg.signature(),
            "cache": str(self.cache_path.resolve()),
            "invocations": [],
        }

    def _card_ref(self) -> str:
        """The card's name if it is the shipped card of that name, else its path."""
        try:
            shipped = load_card(self.card.name)
        except ValueError:
            return self.card.path
        return (
            self.card.name
            if Path(shipped.path).resolve() == Path(self.card.path).resolve()
            else self.card.path
        )

    def _existing_manifest(self) -> dict[str, Any] | None:
        """The manifest of the run being resumed (settings checked), or None for a new run."""
        if not RationaleStore.is_run_dir(self.out_dir):
            return None
        manifest = RationaleStore.read_manifest(self.out_dir)
        sig, want = manifest.get("signature"), self.cfg.signature()
        if sig is not None and sig != want:
            diff = sorted(k for k in set(sig) | set(want) if sig.get(k) != want.get(k))
            raise RunMismatch(
                f"{self.out_dir}: the run was made with other settings ({diff}); "
                "use the same arguments to resume, or a new --out"
            )
        return manifest

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
                    req = self.requests_for(ex, k)
                    r1 = cache.get(req.key) if cache else None
                    if r1 is not None:
                        q["cached_requests"] += 1
                    else:
                        need(estimate_tokens(req.prompt), req.max_tokens)
                    if self.cfg.prompt != "zero_shot_cot":
                        continue
                    if r1 is None:  # step 2 repeats step 1's prompt and reasoning
                        need(self._est_tokens(req), self.cfg.answer_max_tokens)
                        continue
                    req2 = self.step2_for(req, r1)
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
        existing = self._existing_manifest()
        # Bad input fails in the scan, before a manifest exists or anything is sent; the new
        # examples.jsonl replaces the old one only once the scan passed.
        with atomic_open(self.out_dir / EXAMPLES_FILE, "wb") as examples_file:
            scan = self._scan(existing, examples_file)
            # Opened after the scan: its key index and the scan's id hashes never coexist.
            self.store = (
                RationaleStore.open(self.out_dir)
                if existing is not None
                else RationaleStore.create(self.out_dir, self._manifest())
            )
        self.stats.jobs_total = scan["count"] * cfg.samples
        invocations = [
            mark_interrupted(inv, self.cache) for inv in self.store.manifest.get("invocations", [])
        ]
        invocations.append(
            {
                "id": self.invocation,
                "started": _now(),
                "status": "running",
                "samples": cfg.samples,
                "mode": cfg.mode,
            }
        )
        self.store.update_manifest(
            examples={"count": scan["count"], "sha256": scan["sha256"]},
            samples=max(cfg.samples, self.store.manifest.get("samples", 1)),
            invocations=invocations,
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
        error: BaseException | None = None
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
            self.status, self.message = "error", scrub(f"{type(e).__name__}: {e}", self._key)
        finally:
            try:
                self.writer.close()
            except RuntimeError as e:
                error = error or e
                self.status, self.message = "error", scrub(str(e), self._key)
            try:  # leases expire by themselves: a full disk here must not hide the cause
                self.cache.release_leases(self.invocation)
            except sqlite3.OperationalError as e:
                error = error or disk_full.naming(e, self.cache.path)
            if self.status == "complete" and self.stats.jobs_failed:
                self.status = "failures"
                causes = ", ".join(f"{n} {c}" for c, n in self._causes.most_common())
                self.message = (
                    f"{self.stats.jobs_failed} job(s) failed"
                    + (f" (requests: {causes})" if causes else "")
                    + f"; `scicot-teacher failures {self.cache_path}` lists them; "
                    "re-run to retry them"
                )
                if self._orphaned:
                    self.message += (
                        f"; {self._orphaned} request(s) are in batch jobs of a stopped run, "
                        "not sent online: re-run that run (--mode batch) to collect them"
                    )
            self.progress.maybe_render(force=True)
            invocations[-1].update(
                finished=_now(),
                status=self.status,
                message=self.message,
                stats=self.stats.to_json(),
            )
            try:
                self.store.update_manifest(invocations=invocations)
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
        from scicot_jax.teacher.batch import BatchDriver

        driver = BatchDriver(self, client, self.cache)
        await driver.drive()
        if self.cfg.fallback != "online":
            self.stats.jobs_failed += driver.exhausted

    def summary(self) -> dict[str, Any]:
        acc = (
            self._tally.summary(self.store.manifest)
            if self._tally is not None
            else accuracy_summary(self.store)
        )
        return {
            "status": self.status,
            "message": self.message,
            "out_dir": str(self.out_dir),
            "failure_causes": dict(self._causes.most_common()),
            **self.stats.to_json(),
            **acc,
        }


def _safe_url(url: str | None) -> str | None:
    """A URL fit for the manifest: no query string or user info (where keys can hide)."""
    if not url:
        return url
    parts = urlsplit(url)
    host = parts.hostname or ""
    netloc = f"{host}:{parts.port}" if parts.port else host
    return urlunsplit((parts.scheme, netloc, parts.path, "", ""))


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S%z")


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
        run._stop("interrupted", "interrupted; re-run the same command to resume")
        loop.call_soon_threadsafe(lambda: None)

    old = {sig: signal.signal(sig, handler) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, previous in old.items():
            signal.signal(sig, previous)


def config_dict(cfg: RunConfig) -> dict[str, Any]:
    return asdict(cfg)
