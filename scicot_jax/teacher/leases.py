"""Leases on requests in flight: of the runs sharing a cache, one at a time sends a request."""

from __future__ import annotations

import asyncio

from scicot_jax.teacher.cache import Cache
from scicot_jax.teacher.cache import Stats as CacheStats
from scicot_jax.teacher.outcome import Outcome, Stopped
from scicot_jax.teacher.protocol import GenRequest, GenResponse


class Orphaned(Exception):
    """The request is in a batch job whose run stopped: the provider may answer it there, so it
    is not sent online (re-running that batch run collects it)."""


class Leases:
    """One invocation's leases in the cache; a dead holder's expire after `ttl` seconds."""

    def __init__(self, cache: Cache, holder: str, ttl: float, outcome: Outcome):
        self.cache, self.holder, self.ttl, self.outcome = cache, holder, ttl, outcome

    async def wait(self, req: GenRequest) -> GenResponse | None:
        """Waits until this run holds the request's lease (another run sharing the cache may
        be sending it, online or in a batch job); returns the response instead if that run
        cached it meanwhile. Raises Orphaned for a batch job whose run stopped."""
        wait = 0.02
        while True:
            state = self.cache.lease(req.key, self.holder, self.ttl)
            if state == "leased":
                return None
            if state == "hit" and (resp := self.cache.get(req.key)) is not None:
                return resp
            if state == "orphan":
                raise Orphaned
            if self.outcome.stopping:
                raise Stopped
            await asyncio.sleep(wait)
            wait = min(0.5, wait * 1.5)

    def renew(self, req: GenRequest, counters: CacheStats) -> bool:
        """Renews the lease and saves the counters in one commit; False if another run took it."""
        return self.cache.lease(req.key, self.holder, self.ttl, counters) == "leased"

    def release(self) -> None:
        """Gives back every lease this invocation holds (the run is ending)."""
        self.cache.release_leases(self.holder)
