"""The train binary's grouped settings, one object per concern (as t5x's `train()` takes its
`utils.CheckpointConfig`, partitioner and evaluator): gin binds each as `@Name()`."""

from __future__ import annotations

import dataclasses


@dataclasses.dataclass(frozen=True)
class CheckpointConfig:
    """When checkpoints are saved and kept, and the checkpoint a fresh run starts from."""

    period: int = 1000  # steps between saves (t5x's SaveCheckpointConfig.period)
    keep: int = 3  # newest checkpoints kept (t5x's SaveCheckpointConfig.keep)
    async_save: bool = True  # write in the background while training goes on
    # Ours, Hugging Face or t5x (local or gs://), restored when MODEL_DIR has no checkpoint yet
    # (INITIAL_CHECKPOINT_PATH; t5x's RestoreCheckpointConfig.path).
    initial_path: str | None = None
    # True: only its params; otherwise its step and (when the optimizer matches) optimizer
    # state too, as t5x restores. The run's total steps are absolute either way.
    initial_params_only: bool = False


@dataclasses.dataclass(frozen=True)
class PartitioningConfig:
    """How the mesh is cut and what is sharded over it (t5x's PjitPartitioner and
    standard_logical_axis_rules)."""

    model_parallel: int = 1  # devices per model replica (t5x's num_partitions)
    # t5x's; 2 shards weights and optimizer state over "data" too (FSDP).
    parameter_partitioning_dims: int = 1
    # t5x's; 2 shards activations' embed dimension over "model" too.
    activation_partitioning_dims: int = 1


@dataclasses.dataclass(frozen=True)
class EvaluatorConfig:
    """The in-training SeqIO evaluator (t5x's seqio.Evaluator and JSONLogger settings)."""

    num_examples: int | None = 256  # decoded per eval for the metrics (None: all)
    json_write_n_results: int | None = None  # predictions written per eval (None: all; 0: none)


__all__ = ["CheckpointConfig", "PartitioningConfig", "EvaluatorConfig"]
