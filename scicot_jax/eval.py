"""The eval binary: SeqIO metrics of checkpoints (latest, all, or one), as t5x's eval.py.

  python -m scicot_jax.eval --gin_file=runs/eval.gin --gin.CHECKPOINT_PATH=/tmp/m \
    --gin.MIXTURE_OR_TASK_NAME=scicot:synthetic_coin_flip:baseline

For each checkpoint step writes <output_dir>/metrics-<step>.json, predictions-<step>.jsonl,
TensorBoard scalars, and <output_dir>/metrics.json mapping every evaluated step to metrics.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import gin
from scicot_jax.runtime import gin_utils

log = logging.getLogger(__name__)


def checkpoint_steps(
    path: str | Path, which: str | int | Sequence[int] = "latest"
) -> list[tuple[int, Path]]:
    """(step, dir) pairs to evaluate: a model dir's latest/all/given steps, or one dir."""
    from scicot_jax.runtime import checkpoints

    p = Path(path)
    base = p / checkpoints.CHECKPOINT_SUBDIR if (p / checkpoints.CHECKPOINT_SUBDIR).is_dir() else p
    steps = (
        sorted(
            int(c.name)
            for c in base.glob("*")
            if c.name.isdigit() and checkpoints.is_trainer_step_dir(c)
        )
        if base.is_dir()
        else []
    )
    if not steps:  # a single step dir, save_params dir or HF export
        step = 0
        if checkpoints.is_trainer_step_dir(p):
            step = int(checkpoints.read_meta(p).get("step", p.name if p.name.isdigit() else 0))
        return [(step, p)]
    if which == "latest":
        chosen = steps[-1:]
    elif which == "all":
        chosen = steps
    else:
        wanted = [int(which)] if isinstance(which, int | str) else [int(s) for s in which]
        missing = sorted(set(wanted) - set(steps))
        if missing:
            raise ValueError(f"{base}: no checkpoint for steps {missing}; have {steps}")
        chosen = wanted
    return [(s, base / str(s)) for s in chosen]


@gin.configurable("evaluate")
def run(
    *,
    checkpoint_path: str = gin.REQUIRED,
    mixture_or_task_name: str = gin.REQUIRED,
    task_feature_lengths: dict = gin.REQUIRED,
    split: str = "validation",
    module: str | None = "scicot_jax.tasks",
    steps: Any = "latest",
    output_dir: str | None = None,
    model: Any = None,
    batch_size: int = 32,
    max_decode_length: int | None = None,
    limit: int | None = None,
    model_parallel: int = 1,
) -> dict[int, dict[str, float]]:
    """Evaluates each chosen checkpoint; returns {step: metrics}."""
    from scicot_jax.infer import _write_jsonl
    from scicot_jax.runtime import inference, task_eval
    from scicot_jax.runtime import partitioning as part
    from scicot_jax.runtime.metrics import MetricsWriter

    part.maybe_initialize_distributed()
    mesh = part.make_mesh(model_parallel)
    ckpt = Path(checkpoint_path)
    out_dir = (
        Path(output_dir)
        if output_dir
        else (ckpt if (ckpt / "checkpoints").is_dir() else ckpt.parent) / f"eval_{split}"
    )
    writer = MetricsWriter(out_dir)
    summary_file = out_dir / "metrics.json"
    summary = json.loads(summary_file.read_text()) if summary_file.exists() else {}
    results: dict[int, dict[str, float]] = {}
    try:
        for step, step_dir in checkpoint_steps(ckpt, steps):
            config, params = inference.load_model(step_dir, gin_utils.plain(model), mesh)
            metrics, rows = task_eval.evaluate_task(
                params,
                config,
                mesh,
                mixture_or_task_name,
                split,
                task_feature_lengths,
                module=module,
                limit=limit,
                batch_size=batch_size,
                max_decode_length=max_decode_length,
            )
            if not rows:
                raise ValueError(
                    f"{mixture_or_task_name}: no examples with metrics in split {split!r}"
                )
            log.info("step %d: %s", step, metrics)
            results[step] = metrics
            writer.write(step, metrics)
            _write_jsonl(out_dir / f"predictions-{step}.jsonl", rows)
            if writer.enabled:
                (out_dir / f"metrics-{step}.json").write_text(json.dumps(metrics, indent=2))
                summary[str(step)] = metrics
                summary_file.write_text(json.dumps(summary, indent=2, sort_keys=True))
    finally:
        writer.close()
    return results


def main(argv: Sequence[str] | None = None) -> dict[int, dict[str, float]]:
    """Parses flags and gin, then runs `evaluate`."""
    return gin_utils.run_binary(argv, "Evaluate T5 student checkpoints on SeqIO tasks.", run)


def console_entry() -> None:
    gin_utils.console_main(main, "scicot-eval")


if __name__ == "__main__":
    console_entry()
