"""How a run ends: its status and message, and whether it is stopping (a limit, quota, Ctrl-C)."""

from __future__ import annotations


class Stopped(Exception):
    """Raised inside a job when the run is stopping (limit, quota, interrupt)."""


class Outcome:
    """The run's status and message; the first reason to stop wins (requests in flight finish)."""

    def __init__(self) -> None:
        self.status, self.message, self.stopping = "complete", "", False

    def stop(self, status: str, message: str) -> None:
        """Stop the run cleanly with this status and message, unless it is stopping already."""
        if not self.stopping:
            self.stopping, self.status, self.message = True, status, message
