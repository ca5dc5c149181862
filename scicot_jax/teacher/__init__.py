"""The teacher tool: cached, rate-limited, exactly-once rationale queries; offline teachers.

Never imports jax, flax or tensorflow: it runs on machines without accelerators.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable, Iterator
from typing import Any

# Project imports sit inside the functions: importing any teacher module runs this file first,
# and one that needs only, say, the cache must not load the clients and the fake servers.
_ALIASES = {"rpm": "requests_per_minute", "tpm": "tokens_per_minute"}


def _config(
    backend: str,
    model: str,
    prompt: str,
    samples: int,
    temperature: float,
    base_url: str | None,
    options: dict[str, Any],
) -> Any:
    from scicot_jax.teacher.config import RunConfig

    opts = {_ALIASES.get(k, k): v for k, v in options.items() if v is not None}
    opts.setdefault("progress", False)
    return RunConfig(
        backend=backend,
        model=model,
        prompt=prompt,
        samples=samples,
        temperature=temperature,
        base_url=base_url,
        **opts,
    )


async def arun_teacher(
    examples: Iterable[Any] | Callable[[], Iterator[Any]],
    *,
    card: Any,
    backend: str,
    model: str,
    prompt: str,
    samples: int,
    temperature: float,
    cache_path: str,
    out_dir: str,
    base_url: str | None = None,
    **options: Any,
) -> dict[str, Any]:
    """Async form of `run_teacher`."""
    from scicot_jax.teacher.inputs import as_source
    from scicot_jax.teacher.runner import TeacherRun

    cfg = _config(backend, model, prompt, samples, temperature, base_url, options)
    return await TeacherRun(cfg, card, as_source(examples), cache_path, out_dir).run()


def run_teacher(
    examples: Iterable[Any] | Callable[[], Iterator[Any]],
    *,
    card: Any,
    backend: str,
    model: str,
    prompt: str,
    samples: int,
    temperature: float,
    cache_path: str,
    out_dir: str,
    base_url: str | None = None,
    **options: Any,
) -> dict[str, Any]:
    """Query a teacher for `samples` rationales per example into the run at `out_dir`.

    examples: a sequence of Examples, or a zero-argument callable returning an iterator (read
    twice: a scan, then the run). backend: gemini | openai (api="chat"|"completions") |
    openai-chat | openai-completions. options: RunConfig fields (rpm, tpm, concurrency,
    max_tokens, max_cost, max_requests, seed, split, exemplars, progress, ...); None is ignored.
    Returns the summary dict (status, counters, teacher_accuracy, ...).
    """
    return asyncio.run(
        arun_teacher(
            examples,
            card=card,
            backend=backend,
            model=model,
            prompt=prompt,
            samples=samples,
            temperature=temperature,
            cache_path=cache_path,
            out_dir=out_dir,
            base_url=base_url,
            **options,
        )
    )


def start_oracle_server(port: int = 0, **opts: Any) -> Any:
    """Start the synthetic-task oracle on loopback; returns an object with .url and .close()."""
    from scicot_jax.teacher.fakes.oracle_server import start_oracle_server as start

    return start(port, **opts)


def start_replay_server(data: Any, port: int = 0, **opts: Any) -> Any:
    """Serve recorded Fine-tune-CoT completions (files or folders, e.g. its completions/)."""
    from scicot_jax.teacher.fakes.replay_server import start_replay_server as start

    return start(data, port, **opts)


__all__ = ["arun_teacher", "run_teacher", "start_oracle_server", "start_replay_server"]
