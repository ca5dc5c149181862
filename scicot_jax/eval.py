"""The eval binary: SeqIO metrics of checkpoints (latest, all, or one), as t5x's eval.py.

  python -m scicot_jax.eval --gin_file=runs/eval.gin --gin.CHECKPOINT_PATH=/tmp/m \
    --gin.MIXTURE_OR_TASK_NAME=scicot:synthetic_coin_flip:baseline

For each checkpoint step and task writes t5x's (SeqIO JSONLogger's) files to EVAL_OUTPUT_DIR
(default <model dir>/inference_eval): {task}-{step:06}.jsonl, {task}-metrics.jsonl, TensorBoard.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import gin
from scicot_jax.model.decoding import DecodeConfig
from scicot_jax.paths import Path, PathLike, as_path
from scicot_jax.runtime import gin_utils

log = logging.getLogger(__name__)
gin_utils.register_configurables(DecodeConfig)  # `evaluate.decode = @DecodeConfig()`


def checkpoint_steps(
    path: PathLike, which: str | int | Sequence[int] = "latest"
) -> list[tuple[int, Path]]:
    """(step, dir) pairs to evaluate: a model dir's latest/all/given steps, or one dir.

    Model dirs are ours (`checkpoints/<step>`) or t5x's (`checkpoint_<step>`).
    """
    from scicot_jax.checkpoints import orbax, t5x

    p = as_path(path)
    base = p / orbax.CHECKPOINT_SUBDIR if (p / orbax.CHECKPOINT_SUBDIR).is_dir() else p
    dirs = {s: base / str(s) for s in orbax.trainer_steps(base)}
    if not dirs and not (p / t5x.CHECKPOINT_FILE).exists():
        base, dirs = p, t5x.step_dirs(p)
    steps = sorted(dirs)
    if not steps:  # a single step dir, save_params dir, HF export or t5x checkpoint_<step>
        step = 0
        if orbax.is_trainer_step_dir(p):
            step = int(orbax.read_meta(p).get("step", p.name if p.name.isdigit() else 0))
        elif p.name.startswith(t5x.STEP_PREFIX):
            tail = p.name[len(t5x.STEP_PREFIX) :]
            step = int(tail) if tail.isdigit() else 0
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
    return [(s, dirs[s]) for s in chosen]


def model_dir_of(checkpoint_path: PathLike) -> Path:
    """The model dir holding a checkpoint (`<model_dir>/checkpoints/<step>`), or its parent."""
    from scicot_jax.checkpoints import orbax

    p = as_path(checkpoint_path)
    if (p / orbax.CHECKPOINT_SUBDIR).is_dir():
        return p
    if p.parent.name == orbax.CHECKPOINT_SUBDIR:
        return p.parent.parent
    return p.parent


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
    decode: DecodeConfig | None = None,
    limit: int | None = None,
    use_cached: bool = False,
    model_parallel: int = 1,
) -> dict[int, dict[str, float]]:
    """Evaluates each chosen checkpoint; returns {step: metrics keyed "<task>/<metric>"}.

    decode (gin/runs/eval.gin: `evaluate.decode = @DecodeConfig()`, greedy): how outputs are
    decoded, e.g. `--gin.DecodeConfig.max_decode_length=16` (default: the targets' length).
    Writes t5x's files to output_dir (EVAL_OUTPUT_DIR; default <model dir>/inference_eval):
    `{task}-{step:06}.jsonl`, `{task}-metrics.jsonl` and TensorBoard scalars.
    """
    from scicot_jax.runtime import deadlines, inference, task_eval
    from scicot_jax.runtime import partitioning as part
    from scicot_jax.runtime.metrics import MetricsWriter

    part.maybe_initialize_distributed()
    mesh = part.make_mesh(model_parallel)
    out_dir = (
        as_path(output_dir) if output_dir else model_dir_of(checkpoint_path) / "inference_eval"
    )
    ckpt = as_path(checkpoint_path)
    if not deadlines.call("read", ckpt, lambda: deadlines.surely(ckpt, ckpt.exists())):
        raise FileNotFoundError(f"CHECKPOINT_PATH {checkpoint_path}: no such checkpoint")
    writer = None  # made with the first metrics: a failed load leaves no empty output dir
    results: dict[int, dict[str, float]] = {}
    chosen = deadlines.call("read", checkpoint_path, checkpoint_steps, checkpoint_path, steps)
    try:
        for step, step_dir in chosen:
            with deadlines.storage("restore checkpoint", step_dir):
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
                decode=gin_utils.plain(decode),
                use_cached=use_cached,
            )
            if not rows:
                raise ValueError(
                    f"{mixture_or_task_name}: no examples with metrics in split {split!r}"
                )
            log.info("step %d: %s", step, metrics)
            results[step] = metrics
            writer = writer or MetricsWriter(out_dir)
            writer.write(step, metrics)
            deadlines.call(
                "write to", out_dir, task_eval.write_t5x_outputs, out_dir, step, metrics, rows
            )
    finally:
        if writer is not None:
            writer.close()
    return results


def main(argv: Sequence[str] | None = None) -> dict[int, dict[str, float]]:
    """Parses flags and gin, then runs `evaluate`."""
    return gin_utils.run_binary(
        argv, "Evaluate T5 student checkpoints on SeqIO tasks.", run, model_param="evaluate.model"
    )


def console_entry() -> None:
    gin_utils.console_main(main, "scicot-eval")


if __name__ == "__main__":
    console_entry()
