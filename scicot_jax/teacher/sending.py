"""Sending one request: the cache, its lease, the budget and limits, retries and back-off."""

from __future__ import annotations

import asyncio
from collections import Counter

from scicot_jax.teacher.backends import Backend, scrub
from scicot_jax.teacher.cache import Cache
from scicot_jax.teacher.cache import Stats as CacheStats
from scicot_jax.teacher.config import RunConfig
from scicot_jax.teacher.leases import Leases, Orphaned
from scicot_jax.teacher.limiter import Limiter, backoff_delay
from scicot_jax.teacher.outcome import Outcome, Stopped
from scicot_jax.teacher.pricing import Price
from scicot_jax.teacher.progress import Stats
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
from scicot_jax.teacher.report import failure_cause
from scicot_jax.teacher.writer import Write, Writer


def est_tokens(req: GenRequest) -> int:
    """The tokens a request may use at most: its prompt's estimate plus max_tokens."""
    return estimate_tokens(req.prompt) + req.max_tokens


class Sender:
    """Sends a run's requests online: a cached response, or one send with limits and retries."""

    def __init__(
        self,
        cfg: RunConfig,
        *,
        cache: Cache,
        leases: Leases,
        limiter: Limiter,
        backend: Backend,
        writer: Writer,
        stats: Stats,
        price: Price,
        outcome: Outcome,
        counters: CacheStats,
        key: str | None,
    ):
        self.cfg, self.cache, self.leases, self.limiter = cfg, cache, leases, limiter
        self.backend, self.writer, self.stats, self.price = backend, writer, stats, price
        self.outcome, self.counters, self._key = outcome, counters, key
        self.causes: Counter[str] = Counter()  # failed requests by cause (error, status)
        self.orphaned = 0  # requests left to a stopped batch run's open jobs
        self._failing = 0  # consecutive failed requests
        self._reserved_cost = 0.0  # of the requests in flight

    def _est_cost(self, req: GenRequest) -> float:
        return self.price.cost(estimate_tokens(req.prompt), req.max_tokens)

    def _check_budget(self, req: GenRequest) -> None:
        """Stops the run (raises Stopped) where --max-requests / --max-cost forbid `req`."""
        cfg, s = self.cfg, self.stats
        if cfg.max_requests is not None and s.sent >= cfg.max_requests:
            self.outcome.stop("max_requests", f"stopped after {s.sent} requests (--max-requests)")
        elif cfg.max_cost is not None and (
            s.cost_usd + self._reserved_cost + self._est_cost(req) > cfg.max_cost
        ):
            self.outcome.stop(
                "max_cost",
                f"stopped at ${s.cost_usd:.4f}: the next request could pass "
                f"--max-cost ${cfg.max_cost:g}",
            )
        if self.outcome.stopping:
            raise Stopped

    async def request(self, req: GenRequest, order: int | None = None) -> GenResponse | None:
        """Cached response, or send with limits and retries; None if it failed for good.

        `order` (the job's pull order) ranks the request among those waiting for a slot."""
        try:
            return await self._request(req, order)
        except Orphaned:
            self.orphaned += 1
            return None

    async def _request(self, req: GenRequest, order: int | None) -> GenResponse | None:
        hit = self.cache.get(req.key) or await self.leases.wait(req)
        if hit is not None:
            self.stats.cache_hits += 1
            return hit
        est, est_cost = est_tokens(req), self._est_cost(req)
        transient = throttled = 0
        while True:
            self._check_budget(req)  # early: do not queue for a slot we cannot use
            granted = await self.limiter.acquire(est, order)
            try:  # again, with no await before the send: others may have spent the budget
                self._check_budget(req)
            except Stopped:
                await self.limiter.release(est, None)
                raise
            s = self.stats
            s.sent += 1
            # Renews the lease and saves the counters: a request is counted before it is sent.
            if not self.leases.renew(req, self.counters):
                # Queued past the lease's expiry, another run took the request: not ours now.
                s.sent -= 1
                await self.limiter.release(est, 0)
                if (hit := await self.leases.wait(req)) is not None:
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
                self.outcome.stop(
                    "quota",
                    f"{e} -- the provider's daily quota is spent; re-run the "
                    "same command when it resets: finished work is kept.",
                )
                raise Stopped from None
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
            await self.writer.put(Write(ok=[(req, resp)]))
            return resp

    async def _fail(self, req: GenRequest, e: TeacherError) -> None:
        """Records a request that failed for good; stops the run where all would fail alike."""
        self.stats.failures += 1
        self._failing += 1
        msg = scrub(str(e), self._key, 1000)
        self.causes[failure_cause(type(e).__name__, e.status, msg)] += 1
        await self.writer.put(Write(failed=[(req, type(e).__name__, e.status, msg)]))
        # Fail fast where every further request would fail the same way (and may cost).
        if e.status in (401, 403):
            self.outcome.stop("auth", f"the provider refused the credentials: {msg[:300]}")
        elif self._failing >= self.cfg.max_consecutive_failures:
            self.outcome.stop(
                "failing", f"{self._failing} requests in a row failed; last: {msg[:300]}"
            )
        return None
