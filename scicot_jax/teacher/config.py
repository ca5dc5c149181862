"""A teacher run's settings: RunConfig, its bounds, the signature a resumed run keeps, exit codes."""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from scicot_jax.teacher import prompts
from scicot_jax.teacher.backends import provider_name

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
