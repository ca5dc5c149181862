"""The train binary: `python -m scicot_jax.train --gin_file=... --gin.KEY=VALUE`."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import gin
from scicot_jax.data.seqio_feed import DatasetConfig
from scicot_jax.paths import as_path
from scicot_jax.runtime import gin_checks, gin_utils
from scicot_jax.train.configs import CheckpointConfig, EvaluatorConfig, PartitioningConfig
from scicot_jax.train.optimizers import OptimizerConfig
from scicot_jax.train.step import LossConfig

log = logging.getLogger(__name__)
# bindable in gin files by class name
gin_utils.register_configurables(
    OptimizerConfig, LossConfig, CheckpointConfig, PartitioningConfig, EvaluatorConfig
)
# Parameters that became another binding: naming one is one error line that names the new one.
gin_checks.renamed(
    "train",
    train_dataset="train.train_dataset_cfg",
    train_steps="train.total_steps",
    eval_dataset="train.train_eval_dataset_cfg",
    infer_eval="train.infer_eval_dataset_cfg (None: off)",
    infer_eval_examples="EvaluatorConfig.num_examples",
    json_write_n_results="EvaluatorConfig.json_write_n_results",
    checkpoint_period="CheckpointConfig.period",
    keep_checkpoints="CheckpointConfig.keep",
    async_checkpoints="CheckpointConfig.async_save",
    initial_checkpoint_path="CheckpointConfig.initial_path",
    initial_params_only="CheckpointConfig.initial_params_only",
    model_parallel="PartitioningConfig.model_parallel",
    parameter_partitioning_dims="PartitioningConfig.parameter_partitioning_dims",
    activation_partitioning_dims="PartitioningConfig.activation_partitioning_dims",
    log_period="train.stats_period",
    seed="train.random_seed",
)


# t5x's use_hardware_rng switch -> TrainConfig.dropout_rng_impl (the dropout keys' implementation)
DROPOUT_RNG_IMPL = {True: "rbg", False: "threefry2x32"}


@gin.configurable("train")
def run(
    *,
    model: Any = gin.REQUIRED,
    model_dir: str = gin.REQUIRED,
    train_dataset_cfg: DatasetConfig = gin.REQUIRED,
    total_steps: int = gin.REQUIRED,
    train_eval_dataset_cfg: DatasetConfig | None = None,
    infer_eval_dataset_cfg: DatasetConfig | None = None,
    checkpoint_cfg: CheckpointConfig | None = None,
    partitioning_cfg: PartitioningConfig | None = None,
    evaluator_cfg: EvaluatorConfig | None = None,
    optimizer: OptimizerConfig | None = None,
    loss: LossConfig | None = None,
    num_microbatches: int = 1,
    stats_period: int = 100,
    eval_period: int = 0,
    eval_steps: int | None = None,
    random_seed: int | None = 0,
    use_hardware_rng: bool = True,
    compilation_cache_dir: str | None = None,
    compile_topology: str | None = None,
) -> Any:
    """Trains `model` on a SeqIO task; gin binds every argument (see gin/runs/finetune.gin).

    The names t5x's `train()` has mean what they mean there; total_steps is absolute.
    Every eval_period steps (> 0) train_eval_dataset_cfg gives teacher-forced eval loss
    (eval_steps batches) and infer_eval_dataset_cfg the task's SeqIO metrics on greedy
    predictions, as evaluator_cfg says. stats_period: steps between train metrics and log lines.
    use_hardware_rng: dropout keys from XLA's RngBitGenerator ("rbg"), else threefry.
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
    if random_seed is None:  # RANDOM_SEED = None: a fresh seed, the same on every host (t5x)
        random_seed = part.broadcast_time_seed()
        log.info("RANDOM_SEED=None: using seed %d", random_seed)
    model = gin_utils.plain(model)
    train_ds = gin_utils.plain(train_dataset_cfg)
    eval_ds, infer_ds = (
        gin_utils.plain(d) if d is not None else None
        for d in (train_eval_dataset_cfg, infer_eval_dataset_cfg)
    )
    if not compile_topology:  # a compile-only run reads no data
        for ds in filter(None, (train_ds, eval_ds, infer_ds)):
            check_task(ds)  # before MODEL_DIR gets anything
        train_ds = fit_packed_lengths(train_ds)  # PACKED_ROW_TOKENS: the model's lengths, once
    config = TrainConfig(
        model_dir=str(model_dir),
        train_steps=int(total_steps),
        model=model,
        feature_lengths=dict(train_ds.task_feature_lengths),
        optimizer=gin_utils.plain(optimizer) or OptimizerConfig(),
        loss=gin_utils.plain(loss) or LossConfig(),
        checkpoint=gin_utils.plain(checkpoint_cfg) or CheckpointConfig(),
        partitioning=gin_utils.plain(partitioning_cfg) or PartitioningConfig(),
        num_microbatches=num_microbatches,
        seed=random_seed,
        log_period=stats_period,
        eval_period=eval_period if (eval_ds or infer_ds) else 0,
        eval_steps=eval_steps,
        dropout_rng_impl=DROPOUT_RNG_IMPL[bool(use_hardware_rng)],
    )
    if compile_topology:
        from scicot_jax.train.compile_only import report_or_fail

        return report_or_fail(config, compile_topology, train_ds)
    mesh = part.make_mesh(config.partitioning.model_parallel)
    evaluator = gin_utils.plain(evaluator_cfg) or EvaluatorConfig()
    eval_fn = None
    if infer_ds is not None:

        def eval_fn(step: int, params: Any) -> dict[str, float]:
            metrics, rows = task_eval.evaluate_task(
                params,
                model,
                mesh,
                infer_ds.mixture_or_task_name,
                infer_ds.split,
                infer_ds.task_feature_lengths,
                module=infer_ds.module,
                limit=evaluator.num_examples,
                batch_size=infer_ds.batch_size,
                use_cached=infer_ds.use_cached,
            )
            # t5x's in-training SeqIO evaluator writes here too
            task_eval.write_t5x_outputs(
                as_path(model_dir) / "inference_eval",
                step,
                metrics,
                rows,
                evaluator.json_write_n_results,
            )
            return metrics

    result = train(
        config,
        train_batches(train_ds),
        eval_batches=eval_batches(eval_ds) if eval_ds else None,
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
