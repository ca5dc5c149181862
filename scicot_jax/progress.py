"""Progress lines on stderr: redrawn in place on a terminal, a plain line every few seconds
otherwise (logs, CI). Standard library only: the teacher tool uses it too."""

from __future__ import annotations

import sys
import time
from typing import Any, TextIO


def fmt_duration(s: float | None) -> str:
    if s is None:
        return "?"
    s = int(s)
    return f"{s // 3600}h{s // 60 % 60:02d}m" if s >= 3600 else f"{s // 60}m{s % 60:02d}s"


def fmt_count(n: float) -> str:
    for unit, div in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if n >= div:
            return f"{n / div:.1f}{unit}"
    return str(int(n))


class ProgressLine:
    """Writes ``line()`` at most every ``interval`` s: in place on a TTY (0.2 s), else as a new
    line (10 s), so logs get a steady trickle rather than one line per step."""

    def __init__(
        self, stream: TextIO | None = None, enabled: bool = True, interval: float | None = None
    ):
        self.stream = stream or sys.stderr
        self.enabled = enabled
        self.tty = hasattr(self.stream, "isatty") and self.stream.isatty()
        self.interval = interval if interval is not None else (0.2 if self.tty else 10.0)
        self._last = float("-inf")  # the first update shows at once

    def line(self) -> str:
        """The text to show (subclasses)."""
        raise NotImplementedError

    def maybe_render(self, force: bool = False) -> None:
        """Draw the line if ``interval`` has passed (always with ``force``, then ending it)."""
        if not self.enabled:
            return
        now = time.monotonic()
        if not force and now - self._last < self.interval:
            return
        self._last = now
        end = "\r" if self.tty and not force else "\n"
        self.stream.write(("\x1b[2K" if self.tty else "") + self.line() + end)
        self.stream.flush()


class StepProgress(ProgressLine):
    """``[label] step 30/100 30.0% | loss 2.31 | 5.2k tok/s | ETA 1m02s`` for a loop of known
    length; rates and ETA count from the first step this process ran (a resumed run is fair)."""

    def __init__(
        self,
        label: str,
        total: int,
        start: int = 0,
        unit: str = "tok",
        **kw: Any,
    ):
        super().__init__(**kw)
        self.label, self.total, self.unit = label, total, unit
        self.start = self.step = start
        self.done = 0  # units (tokens, rows) since start
        self.values: dict[str, float] = {}
        self._t0 = time.monotonic()

    def advance(self, step: int, amount: int = 0, **values: float | None) -> None:
        """At ``step`` now, with ``amount`` more units done; values (loss=...) shown as given."""
        self.step = step
        self.done += amount
        self.values.update({k: v for k, v in values.items() if v is not None})
        self.maybe_render(force=step >= self.total)

    def line(self) -> str:
        elapsed = max(1e-9, time.monotonic() - self._t0)
        ran = self.step - self.start
        eta = (self.total - self.step) * elapsed / ran if ran else None
        pct = 100 * self.step / self.total if self.total else 100.0
        shown = "".join(f" | {k} {v:.4g}" for k, v in self.values.items())
        return (
            f"[{self.label}] step {self.step}/{self.total} {pct:5.1f}%{shown} | "
            f"{fmt_count(self.done / elapsed)} {self.unit}/s | ETA {fmt_duration(eta)}"
        )
