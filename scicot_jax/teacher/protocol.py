"""Requests, responses and the error classes every backend maps its failures onto."""

from __future__ import annotations

import functools
import hashlib
import json
from dataclasses import asdict, dataclass, field
from typing import Any

PROVIDERS = ("gemini", "openai-chat", "openai-completions")


def estimate_tokens(text: str) -> int:
    """Rough token count (4 characters a token, at least 1): budget quotes before a request is
    sent, and usage when a provider reports none."""
    return len(text) // 4 + 1


@dataclass(frozen=True)
class GenRequest:
    """One generation request; its canonical JSON (never code, never keys) is the cache key."""

    provider: str
    model: str
    prompt: str
    temperature: float
    max_tokens: int
    seed: int | None
    sample_index: int
    stop: tuple[str, ...] = ()

    def canonical(self) -> str:
        """Sorted, compact JSON of every field that can change the response."""
        d = dict(self.__dict__)  # asdict is slow at 20k requests/s
        d.pop("key", None)  # the cached property, once computed
        d["stop"] = list(self.stop)
        d["temperature"] = float(self.temperature)
        return _CANONICAL.encode(d)

    @functools.cached_property
    def key(self) -> str:
        """sha256 of the canonical JSON (computed once: cache, batch and writer all ask)."""
        return hashlib.sha256(self.canonical().encode()).hexdigest()

    @classmethod
    def from_canonical(cls, text: str) -> GenRequest:
        d = json.loads(text)
        d["stop"] = tuple(d.get("stop", ()))
        return cls(**d)


# One encoder (json.dumps builds a new one per call when given options): the same text.
_CANONICAL = json.JSONEncoder(sort_keys=True, separators=(",", ":"), ensure_ascii=False)


@dataclass
class GenResponse:
    """A successful completion; `finish_reason` is normalised to stop | length | other."""

    text: str
    finish_reason: str = "stop"
    input_tokens: int = 0
    output_tokens: int = 0
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def truncated(self) -> bool:
        return self.finish_reason == "length"

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True, ensure_ascii=False)

    @classmethod
    def from_json(cls, text: str) -> GenResponse:
        return cls(**json.loads(text))


class TeacherError(Exception):
    """Base class of backend failures."""

    status: int | None = None


class RateLimited(TeacherError):
    """HTTP 429: retry after `retry_after` seconds (None: unknown, back off)."""

    def __init__(self, message: str, retry_after: float | None = None, status: int = 429):
        super().__init__(message)
        self.retry_after = retry_after
        self.status = status


class QuotaExhausted(TeacherError):
    """A daily (or billing) quota is spent: retrying today is pointless, the run must stop."""

    def __init__(self, message: str, status: int = 429):
        super().__init__(message)
        self.status = status


class TransientError(TeacherError):
    """5xx, timeouts, dropped connections, malformed bodies: retry with backoff."""

    def __init__(self, message: str, status: int | None = None):
        super().__init__(message)
        self.status = status


class FatalRequestError(TeacherError):
    """Other 4xx, blocked or empty responses: retrying would give the same answer."""

    def __init__(self, message: str, status: int | None = None):
        super().__init__(message)
        self.status = status
