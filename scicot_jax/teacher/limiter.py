"""Client-side limits: request and token buckets, an AIMD concurrency cap, a global pause.

Everything runs on one asyncio loop, so plain attributes need no locks. Waiting requests are
served first come, first served: buckets wait behind an asyncio.Lock, and a freed concurrency
slot is handed to the waiter of the earliest job (then the longest waiter).
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import math
import random
import time
from dataclasses import dataclass


class TokenBucket:
    """`rate` tokens per second up to `capacity`; `take` waits its turn (FIFO)."""

    def __init__(self, rate: float, capacity: float, initial: float | None = None):
        if rate <= 0:
            raise ValueError(f"rate must be > 0, got {rate}")
        self.rate = rate
        self.capacity = max(1.0, capacity)
        # Start nearly empty: a full bucket at start would exceed the limit over the first window.
        self.tokens = min(self.capacity, 1.0) if initial is None else initial
        self._stamp = time.monotonic()
        self._lock = asyncio.Lock()

    def _refill(self) -> None:
        now = time.monotonic()
        self.tokens = min(self.capacity, self.tokens + (now - self._stamp) * self.rate)
        self._stamp = now

    async def take(self, n: float = 1.0) -> None:
        """Remove n tokens, waiting until they exist (n > capacity: wait for a full bucket)."""
        async with self._lock:
            need = min(n, self.capacity)
            while True:
                self._refill()
                if self.tokens >= need:
                    self.tokens -= n  # may go negative for n > capacity; later takes wait
                    return
                await asyncio.sleep((need - self.tokens) / self.rate)

    def adjust(self, delta: float) -> None:
        """Give back (delta > 0) or charge (delta < 0) tokens once the true cost is known."""
        self._refill()
        self.tokens = min(self.capacity, self.tokens + delta)


class AdaptiveConcurrency:
    """A semaphore whose limit halves on a 429 and grows by ~1 per window of successes."""

    def __init__(self, max_limit: int, min_limit: int = 1):
        self.max_limit = max(1, max_limit)
        self.min_limit = max(1, min(min_limit, self.max_limit))
        self.limit = float(self.max_limit)
        self.in_flight = 0
        self._last_decrease = -math.inf
        # (order, arrival, future): the smallest order waits least; arrival breaks ties (FIFO).
        self._waiters: list[tuple[float, int, asyncio.Future[None]]] = []
        self._arrivals = itertools.count()

    async def acquire(self, order: float | None = None) -> float:
        """Wait for a slot; returns the monotonic time it was granted (pass to on_throttle).

        Waiters are served by `order` (the runner passes its job's pull order, so a job's
        second request goes before later jobs' first), then first come, first served.
        """
        if not self._waiters and self.in_flight < int(self.limit):
            self.in_flight += 1
        else:
            fut = asyncio.get_running_loop().create_future()
            key = math.inf if order is None else order
            heapq.heappush(self._waiters, (key, next(self._arrivals), fut))
            try:
                await fut  # the slot is handed over (in_flight already counts it)
            except asyncio.CancelledError:
                if fut.done() and not fut.cancelled():
                    self.in_flight -= 1  # granted as we were cancelled: pass it on
                    self._grant()
                else:
                    self._waiters = [w for w in self._waiters if w[2] is not fut]
                    heapq.heapify(self._waiters)
                raise
        return time.monotonic()

    async def release(self) -> None:
        self.in_flight -= 1
        self._grant()

    def _grant(self) -> None:
        """Hands free slots to the longest waiters (a releaser never jumps the queue)."""
        while self._waiters and self.in_flight < int(self.limit):
            fut = heapq.heappop(self._waiters)[2]
            if not fut.done():
                self.in_flight += 1
                fut.set_result(None)

    def on_success(self) -> None:
        # Additive increase: +1 per `limit` successes (one "window").
        self.limit = min(self.max_limit, self.limit + 1.0 / self.limit)
        self._grant()

    def on_throttle(self, granted_at: float) -> bool:
        """Halve once per congestion event: only 429s for requests sent after the last cut."""
        if granted_at < self._last_decrease:
            return False
        self.limit = max(float(self.min_limit), self.limit / 2)
        self._last_decrease = time.monotonic()
        return True


def backoff_delay(attempt: int, base: float = 0.5, cap: float = 30.0) -> float:
    """Exponential backoff with equal jitter: uniform in [d/2, d], d = min(cap, base*2^attempt)."""
    d = min(cap, base * (2 ** max(0, attempt)))
    return d / 2 + random.random() * d / 2


@dataclass
class Limits:
    """User-facing knobs; 0 or None means unlimited."""

    requests_per_minute: float = 0.0
    tokens_per_minute: float = 0.0
    max_concurrency: int = 32
    burst_seconds: float = 0.1  # request bucket depth: catches up a late event loop
    # Between a grant and the request's arrival (a lease transaction, the event loop): a
    # request sent late lets the next ones arrive closer together than the bucket granted them.
    send_jitter_seconds: float = 0.1


class Limiter:
    """Combines the pause, concurrency cap and buckets around each request."""

    def __init__(self, limits: Limits):
        self.limits = limits
        rpm, tpm = limits.requests_per_minute, limits.tokens_per_minute
        # A minute grants at most the bucket's depth plus a minute of refill, and the provider
        # sees the grants of up to a minute and the send jitter: both are paid for out of the
        # rate (rpm / 60.2 a second, 99.7% of the limit), so no sliding 60 s window at the
        # provider passes the limit.
        margin = limits.burst_seconds + limits.send_jitter_seconds
        rate = rpm / (60 + margin) if rpm and rpm > 0 else 0.0
        self.requests = TokenBucket(rate, rate * limits.burst_seconds) if rate else None
        # Token limits are coarse (prompt sizes vary): allow one second of tokens in a burst.
        self.tokens = TokenBucket(tpm / 60, tpm / 60, initial=tpm / 60) if tpm and tpm > 0 else None
        self.concurrency = AdaptiveConcurrency(limits.max_concurrency)
        self.pause_until = 0.0
        self.pauses = 0

    def pause(self, seconds: float) -> None:
        """Stop every request from starting for `seconds` (extends, never shortens a pause)."""
        until = time.monotonic() + max(0.0, seconds)
        if until > self.pause_until:
            self.pause_until = until
            self.pauses += 1

    async def _wait_pause(self) -> None:
        while (left := self.pause_until - time.monotonic()) > 0:
            await asyncio.sleep(left)

    async def acquire(self, est_tokens: int, order: float | None = None) -> float:
        """Wait for a slot (by `order`, see AdaptiveConcurrency), the pause, a request token
        and tokens; returns the grant time."""
        granted = await self.concurrency.acquire(order)
        try:
            await self._wait_pause()
            if self.requests is not None:
                await self.requests.take(1)
            if self.tokens is not None:
                await self.tokens.take(est_tokens)
            await self._wait_pause()  # a 429 elsewhere may have paused us meanwhile
        except BaseException:
            await self.concurrency.release()
            raise
        return granted

    async def release(self, est_tokens: int, used_tokens: int | None) -> None:
        if self.tokens is not None and used_tokens is not None:
            self.tokens.adjust(est_tokens - used_tokens)
        await self.concurrency.release()

    def on_success(self) -> None:
        self.concurrency.on_success()

    def on_throttle(self, granted_at: float, retry_after: float | None) -> None:
        self.concurrency.on_throttle(granted_at)
        if retry_after is not None:
            self.pause(retry_after)
