"""The train binary: `python -m scicot_jax.train --gin_file=... --gin.KEY=VALUE`."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import gin
from scicot_jax.data.seqio_feed import DatasetConfig
from scicot_jax.paths import as_path
from scicot_jax.runtime import gin_utils
from scicot_jax.train.optimizers import OptimizerConfig
from scicot_jax.train.step import LossConfig

log = logging.getLogger(__name__)


@gin.configurable("train")
def run(
    *,
    model_dir: str = gin.REQUIRED,
    model: Any = gin.REQUIRED,
    train_dataset: DatasetConfig = gin.REQUIRED,
    train_steps: int = gin.REQUIRED,
    eval_dataset: DatasetConfig | None = None,
    optimizer: OptimizerConfig | None = None,
    loss: LossConfig | None = None,
    num_microbatches: int = 1,
    checkpoint_period: int = 1000,
    keep_checkpoints: int = 3,
    async_checkpoints: bool = True,
    log_period: int = 100,
    eval_period: int = 0,
    eval_steps: int | None = None,
    infer_eval: bool = False,
    infer_eval_examples: int | None = 256,
    json_write_n_results: int | None = None,
    use_hardware_rng: bool = True,
    initial_checkpoint_path: str | None = None,
    initial_params_only: bool = False,
    model_parallel: int = 1,
    parameter_partitioning_dims: int = 1,
    seed: int | None = 0,
    compilation_cache_dir: str | None = None,
    compile_topology: str | None = None,
) -> Any:
    """Trains `model` on a SeqIO task; gin binds every argument (see gin/runs/finetune.gin).

    eval_period > 0 with an eval_dataset logs teacher-forced eval loss, and with infer_eval
    also the task's SeqIO metrics on greedy predictions (first infer_eval_examples examples),
    writing the first json_write_n_results of them (None: all) as t5x's JSONLogger does.
    use_hardware_rng: dropout keys from XLA's RngBitGenerator ("rbg"), else threefry.
    parameter_partitioning_dims: t5x's; 2 shards weights and optimizer state over "data" too.
    compile_topology (e.g. "v5e:4x4"): only compile the step for that TPU slice, print the
    compiler's report and return it (train/compile_only.py); nothing is read or written.
    """
    import jax

    from scicot_jax.data.seqio_feed import (
        check_task,
        eval_batches,
        fit_packed_lengths,
        train_batches,
    )
    from scicot_jax.runtime import partitioning as part
    from scicot_jax.runtime import task_eval
    from scicot_jax.train.trainer import TrainConfig, train

    if compilation_cache_dir:  # JAX reads and writes it through etils.epath: gs:// works
        from jax.experimental.compilation_cache import compilation_cache

        jax.config.update("jax_compilation_cache_dir", compilation_cache_dir)
        if "://" in compilation_cache_dir:  # JAX's size limit takes a lock file by a local
            # path: on gs:// it would create ./gs:/<bucket>/... in the working directory
            jax.config.update("jax_compilation_cache_max_size", -1)
        compilation_cache.reset_cache()  # a cache opened earlier in this process is replaced
    part.maybe_initialize_distributed()
    if seed is None:  # RANDOM_SEED = None: a fresh seed, the same on every host (as t5x)
        seed = part.broadcast_time_seed()
        log.info("RANDOM_SEED=None: using seed %d", seed)
    model = gin_utils.plain(model)
    train_dataset = gin_utils.plain(train_dataset)
    eval_dataset = gin_utils.plain(eval_dataset) if eval_dataset is not None else None
    if not compile_topology:  # a compile-only run reads no data
        for ds in filter(None, (train_dataset, eval_dataset)):
            check_task(ds)  # before MODEL_DIR gets anything
        train_dataset = fit_packed_lengths(train_dataset)  # PACKED_ROW_TOKENS: model's lengths
    config = TrainConfig(
        model_dir=str(model_dir),
        train_steps=int(train_steps),
        batch_size=train_dataset.batch_size,
        model=model,
        feature_lengths=dict(train_dataset.task_feature_lengths),
        optimizer=gin_utils.plain(optimizer) or OptimizerConfig(),
        loss=gin_utils.plain(loss) or LossConfig(),
        num_microbatches=num_microbatches,
        seed=seed,
        model_parallel=model_parallel,
        parameter_partitioning_dims=parameter_partitioning_dims,
        checkpoint_period=checkpoint_period,
        keep_checkpoints=keep_checkpoints,
        async_checkpoints=async_checkpoints,
        log_period=log_period,
        eval_period=eval_period if eval_dataset else 0,
        eval_steps=eval_steps,
        initial_checkpoint_path=initial_checkpoint_path or None,
        initial_params_only=initial_params_only,
        dropout_rng_impl="rbg" if use_hardware_rng else "threefry2x32",
    )
    if compile_topology:
        from scicot_jax.train.compile_only import report_or_fail

        return report_or_fail(config, compile_topology, packed=train_dataset.pack)
    mesh = part.make_mesh(model_parallel)
    eval_fn = None
    if infer_eval and eval_dataset is not None:

        def eval_fn(step: int, params: Any) -> dict[str, float]:
            metrics, rows = task_eval.evaluate_task(
                params,
                model,
                mesh,
                eval_dataset.mixture_or_task_name,
                eval_dataset.split,
                eval_dataset.task_feature_lengths,
                module=eval_dataset.module,
                limit=infer_eval_examples,
                batch_size=eval_dataset.batch_size,
                use_cached=eval_dataset.use_cached,
            )
            # t5x's in-training SeqIO evaluator writes here too
            task_eval.write_t5x_outputs(
                as_path(model_dir) / "inference_eval", step, metrics, rows, json_write_n_results
            )
            return metrics

    result = train(
        config,
        train_batches(train_dataset),
        eval_batches=eval_batches(eval_dataset) if eval_dataset else None,
        mesh=mesh,
        eval_fn=eval_fn,
        on_start=lambda: gin_utils.write_operative_config(model_dir, "config"),
    )
    log.info(
        "train finished at step %d%s; checkpoints in %s",
        result.step,
        " (preempted)" if result.preempted else "",
        result.checkpoint_dir,
    )
    return result


def main(argv: Sequence[str] | None = None) -> Any:
    """Parses flags and gin, then runs `train`; returns its TrainResult."""
    compile_only = dict(
        metavar="TOPOLOGY", help="compile for a TPU slice (e.g. v5e:4x4), report, exit"
    )
    return gin_utils.run_binary(
        argv,
        "Train a T5 student (t5x-style gin binary).",
        run,
        {"compile_only": ("train.compile_topology", compile_only)},
    )


def console_entry() -> None:
    gin_utils.console_main(main, "scicot-train")


__all__ = ["run", "main", "console_entry"]
