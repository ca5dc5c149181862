"""Run statistics and the progress line on stderr."""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from typing import TextIO

from scicot_jax.progress import ProgressLine, fmt_count, fmt_duration


@dataclass
class Stats:
    """Counters of one invocation of `run` (a resumed run starts new counters)."""

    jobs_total: int | None = None  # (example, sample) pairs in the input
    jobs_skipped: int = 0  # already in the store from an earlier invocation
    written: int = 0  # records written by this invocation
    jobs_failed: int = 0
    cache_hits: int = 0  # requests answered from the cache
    sent: int = 0  # HTTP requests sent, retries included
    ok: int = 0  # successful HTTP responses
    in_flight: int = 0
    throttled: int = 0  # 429s
    retries: int = 0  # transient failures retried
    failures: int = 0  # requests given up on (recorded in the cache's failures table)
    truncated: int = 0
    input_tokens: int = 0  # billed (sent) tokens only
    output_tokens: int = 0
    cost_usd: float = 0.0
    started: float = field(default_factory=time.monotonic)

    def to_json(self) -> dict:
        d = asdict(self)
        d.pop("started")
        d.pop("in_flight")
        d["cost_usd"] = round(self.cost_usd, 6)
        d["elapsed_s"] = round(time.monotonic() - self.started, 3)
        return d

    @property
    def processed(self) -> int:
        return self.written + self.jobs_failed

    def projected_cost(self) -> float | None:
        """Cost so far extrapolated over the jobs still to do (cache hits cost nothing)."""
        if self.jobs_total is None or self.processed == 0:
            return None
        todo = self.jobs_total - self.jobs_skipped
        return self.cost_usd / self.processed * todo

    def eta_s(self) -> float | None:
        if self.jobs_total is None or self.processed == 0:
            return None
        rate = self.processed / max(1e-9, time.monotonic() - self.started)
        return (self.jobs_total - self.jobs_skipped - self.processed) / rate


class Progress(ProgressLine):
    """Renders Stats at most every `interval` s: in place on a TTY, else a line at a time."""

    def __init__(
        self,
        stats: Stats,
        stream: TextIO | None = None,
        enabled: bool = True,
        interval: float | None = None,
    ):
        super().__init__(stream=stream, enabled=enabled, interval=interval)
        self.stats = stats

    def line(self) -> str:
        s = self.stats
        todo = None if s.jobs_total is None else s.jobs_total - s.jobs_skipped
        done = f"{s.processed}/{todo}" if todo is not None else str(s.processed)
        pct = f" {100 * s.processed / todo:5.1f}%" if todo else ""
        proj = s.projected_cost()
        cost = f"${s.cost_usd:.4f}" + (f" (~${proj:.2f} total)" if proj is not None else "")
        rate = s.processed / max(1e-9, time.monotonic() - s.started)
        return (
            f"[teacher] {done}{pct} | hits {s.cache_hits} | in flight {s.in_flight} | "
            f"429s {s.throttled} | retries {s.retries} | failed {s.jobs_failed} | "
            f"tok {fmt_count(s.input_tokens + s.output_tokens)} | {cost} | "
            f"{rate:.1f} rec/s | ETA {fmt_duration(s.eta_s())}"
        )
