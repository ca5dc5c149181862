"""The teacher step: rationales from the oracle, replay or a live teacher, or an import."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from scicot_jax.data import grading
from scicot_jax.data.examples import Example
from scicot_jax.pipeline.config import TeacherConfig

STORE = "store"


SAMPLING_TEMPERATURE = 0.7  # Fine-tune-CoT's diverse reasoning


def default_temperature(samples: int) -> float:
    """Fine-tune-CoT: greedy for one sample, 0.7 for diverse reasoning."""
    return 0.0 if samples <= 1 else SAMPLING_TEMPERATURE


def describe(t: TeacherConfig) -> str:
    """Which teacher a run used, in words (results and reports name it)."""
    if t.backend == "oracle":
        return "oracle (offline solver of the synthetic tasks)"
    if t.backend == "replay":
        return f"replay of recorded completions {t.replay_path}"
    if t.backend == "import":
        return f"import {t.importer} from {t.import_path or 'the card data'}"
    return f"live {t.backend} model {t.model}" + (f" at {t.base_url}" if t.base_url else "")


def result_inputs(t: TeacherConfig) -> dict:
    """The teacher settings that change the step's result (its fingerprint): where the request
    cache lives does not, so a moved cache keeps the finished step (None, as before it was set)."""
    return {**t.__dict__, "cache": None}


def check_replay_degree(
    recordings: dict[str, list], examples: Sequence[Example], prompt: str, samples: int
) -> None:
    """Refuse D > 1 unless the recording holds D distinct completions of every question."""
    from scicot_jax.teacher import prompts

    if samples <= 1 or prompt != "zero_shot_cot":
        return
    for ex in examples:
        have = len(recordings.get(prompts.zero_shot_step1(ex), ()))
        if have < samples:
            raise ValueError(
                f"replay teacher: question {ex.id} has {have} recorded completion(s), but D = "
                f"{samples} needs {samples} distinct samples per question; use D = 1 or "
                "recordings with diverse samples (e.g. --teacher.backend import of a multi-sample set)"
            )


def summarize_store(store_dir: Path) -> dict:
    """Counts, teacher accuracy over all samples, and tokens of a rationale-store run."""
    from scicot_jax.data.store import RationaleStore

    store = RationaleStore.open(store_dir)
    recs = list(store.records())
    judged = [r for r in recs if r.correct is not None]
    sources = sorted({r.source for r in recs})
    by_split: dict[str, list[bool]] = {}
    for r in judged:
        by_split.setdefault(r.split or "train", []).append(bool(r.correct))
    return {
        "records": len(recs),
        "questions": len({r.example_id for r in recs}),
        "correct": sum(1 for r in recs if r.correct),
        "unparsed": sum(1 for r in recs if r.answer is None),
        "accuracy": grading.percent(sum(1 for r in judged if r.correct), len(judged)),
        "accuracy_by_split": {k: grading.percent(sum(v), len(v)) for k, v in by_split.items()},
        "input_tokens": sum(r.input_tokens for r in recs),
        "output_tokens": sum(r.output_tokens for r in recs),
        "source": ", ".join(sources),
        "store": str(store_dir),
    }


def run(
    t: TeacherConfig,
    card: Any,
    prompt: str,
    samples: int,
    examples: Sequence[Example],
    out_dir: Path,
    temperature: float | None = None,
    seed: int = 0,
) -> dict:
    """Fill ``<out_dir>/store`` with ``samples`` rationales per example at ``temperature``
    (default: greedy for one sample, 0.7 for more); ``seed`` draws the oracle's failures.
    Returns a summary."""
    store_dir = out_dir / STORE
    if t.backend == "import":
        _import(t, card, examples, store_dir)
        return {
            **summarize_store(store_dir),
            "backend": "import",
            "importer": t.importer,
            "teacher": describe(t),
        }
    from scicot_jax import teacher

    if temperature is None:
        temperature = default_temperature(samples) if t.temperature is None else t.temperature
    server = None
    backend, base_url, options = t.backend, t.base_url, {}
    if t.backend == "oracle":
        from scicot_jax.teacher.fakes.oracle_behaviour import Behaviour

        behaviour = Behaviour(
            t.oracle_step_error, t.oracle_flawed_right, t.oracle_rationalise, seed=seed
        )
        server = teacher.start_oracle_server(
            0,
            error_rate=t.oracle_error_rate,
            log_requests=False,
            seed=seed,
            behaviour=behaviour,
        )
        backend, base_url = t.api, server.url
    elif t.backend == "replay":
        from scicot_jax.teacher.fakes.replay_server import ReplayServer, load_recordings
        from scicot_jax.teacher.jobs import derive_seed

        if not t.replay_path:
            raise ValueError(
                "--teacher.backend replay needs --teacher.replay_path (recorded completions)"
            )
        recordings = load_recordings([t.replay_path])
        check_replay_degree(recordings, examples, prompt, samples)
        server = ReplayServer(recordings, log_requests=False)
        # Sample k of a question is its k-th recorded completion (distinct samples).
        server.sample_of_seed.update(
            {derive_seed(0, ex.id, k): k for ex in examples for k in range(samples)}
        )
        server.start()
        backend, base_url, options["api"] = "openai", server.url, "completions"
    try:
        summary = teacher.run_teacher(
            list(examples),
            card=card,
            backend=backend,
            model=t.model,
            prompt=prompt,
            samples=samples,
            temperature=temperature,
            cache_path=str(t.cache or out_dir / "cache.sqlite"),
            out_dir=str(store_dir),
            base_url=base_url,
            max_requests=t.max_requests,
            split="train",
            **options,
        )
    finally:
        if server is not None:
            server.close()
    if summary.get("status") not in (None, "complete"):
        raise RuntimeError(
            f"teacher run {store_dir} stopped: {summary.get('status')} "
            f"({summary.get('message', '')}); re-run to resume it"
        )
    return {
        **summarize_store(store_dir),
        "backend": t.backend,
        "teacher": describe(t),
        "temperature": temperature,
        "run": {k: v for k, v in summary.items() if isinstance(v, int | float | str)},
    }


def _import(t: TeacherConfig, card: Any, examples: Sequence[Example], store_dir: Path) -> None:
    """Recorded rationales -> a store run; importer = 'svamp_multi_cot', 'dsbs:cqa',
    'finetune_cot:svamp' (see ``scicot_jax.data.importers``); import_path overrides the data dir."""
    from scicot_jax.data import importers

    name, _, arg = (t.importer or "").partition(":")
    if name not in importers.IMPORTERS:
        raise ValueError(
            f"teacher backend 'import' needs importer NAME[:ARG], NAME one of "
            f"{sorted(importers.IMPORTERS)}; got {t.importer!r}"
        )
    run = importers.IMPORTERS[name](*([arg] if arg else []), data_dir=t.import_path)
    if run.card.name != card.name:
        raise ValueError(
            f"importer {t.importer!r} reads card {run.card.name!r}, but the "
            f"pipeline's task is {card.name!r}"
        )
    importers.write_run(run, store_dir)
