"""One typed path from a student's settings to training, whichever trainer runs it.

``build`` turns a ``StudentConfig`` (the one owner and default of every knob) into a
``TrainPlan``: the T5Config, the TrainConfig (optimizer, loss, checkpoints) and the data source,
in-memory token pairs or a SeqIO task (``DatasetConfig``). Two consumers:

- ``train_in_process(plan)``: the library trainer on the plan's batches;
- ``train_with_gin(plan)``: the train binary's gin-configurable ``run``, bound from the plan
  (so ``MODEL_DIR/config.gin`` reproduces the run with ``python -m scicot_jax.train``), the
  user's extra bindings last.

The same plan through both gives bitwise-equal parameters (tests/test_student_plan.py).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from scicot_jax.data import epochs, packing
from scicot_jax.data.seqio_feed import DatasetConfig, fit_packed_lengths, train_batches
from scicot_jax.data.tokens import pad_rows, with_eos
from scicot_jax.pipeline.config import StudentConfig
from scicot_jax.train import cli as train_cli
from scicot_jax.train.configs import CheckpointConfig
from scicot_jax.train.optimizers import OptimizerConfig
from scicot_jax.train.step import LossConfig
from scicot_jax.train.trainer import TrainConfig

# StudentConfig owns these model fields; an `overrides` entry for them would be a second owner.
OWNED_MODEL_FIELDS = ("dropout_rate", "dtype")


def round_up(n: int, k: int = 8) -> int:
    return max(k, -(-n // k) * k)


class TokenizedPairs:
    """(inputs, targets) texts as fixed-length token arrays, with the model's special ids."""

    def __init__(
        self,
        vocab: Any,
        model: Any,
        pairs: Sequence[tuple[str, str]],
        max_inputs: int,
        max_targets: int,
    ):
        self.model = model
        raw_enc = [vocab.encode(i) for i, _ in pairs]  # once: SentencePiece is the cost here
        raw_dec = [vocab.encode(t) for _, t in pairs]
        enc = [with_eos(e, max_inputs, model.eos_id) for e in raw_enc]
        dec = [with_eos(d, max_targets, model.eos_id) for d in raw_dec]
        self.truncated = sum(len(e) >= max_inputs for e in raw_enc) + sum(
            len(d) >= max_targets for d in raw_dec
        )
        self.inputs_length = min(max_inputs, round_up(max(len(e) for e in enc)))
        self.targets_length = min(max_targets, round_up(max(len(d) for d in dec)))
        self.encoder_BxL = pad_rows(enc, self.inputs_length, model.pad_id)
        self.targets_BxL = pad_rows(dec, self.targets_length, model.pad_id)
        self.tokens_per_example = float(np.mean([len(e) + len(d) for e, d in zip(enc, dec)]))
        self.examples_per_row = 1.0

    @property
    def lengths(self) -> dict[str, int]:
        return {"inputs": self.inputs_length, "targets": self.targets_length}

    def __len__(self) -> int:
        return len(self.encoder_BxL)

    def batch(self, idx: np.ndarray) -> dict[str, np.ndarray]:
        m = self.model
        return epochs.padded_batch(
            self.encoder_BxL, self.targets_BxL, idx, m.pad_id, m.decoder_start_id
        )

    def batches(
        self, batch_size: int, seed: int, start: int = 0, host: int = 0, hosts: int = 1
    ) -> Iterator[dict[str, np.ndarray]]:
        """Endless shuffled epochs of global batches (``data.epochs``), positioned at batch
        ``start`` (the trainer resumes with it); each host yields its rows ``host::hosts``."""
        return epochs.padded_batches(
            self.encoder_BxL,
            self.targets_BxL,
            batch_size=batch_size,
            seed=seed,
            pad_id=self.model.pad_id,
            decoder_start_id=self.model.decoder_start_id,
            start=start,
            host=host,
            hosts=hosts,
        )


class PackedPairs:
    """TokenizedPairs packed best-fit (data.packing) into rows of lengths fitted to them within
    `row_tokens`: SeqIO's packed features, so model and loss are those of the SeqIO feed."""

    def __init__(self, pairs: TokenizedPairs, row_tokens: int):
        model = pairs.model
        if model.pad_id != 0 or model.decoder_start_id != 0:  # SeqIO's packed features' ids
            raise ValueError("packing needs pad_id = decoder_start_id = 0 (T5's)")
        self.model = model
        self.tokenized = pairs  # its lengths are one example's: what decoding reads
        self.truncated = pairs.truncated
        self.inputs = [r[r != 0] for r in pairs.encoder_BxL]
        self.targets = [r[r != 0] for r in pairs.targets_BxL]
        sizes = np.array([[len(i), len(t)] for i, t in zip(self.inputs, self.targets)])
        self.lengths, density = packing.fitted_rows(sizes, row_tokens)
        self.tokens_per_example = pairs.tokens_per_example
        self.examples_per_row = density * sum(self.lengths.values()) / self.tokens_per_example

    def __len__(self) -> int:
        return len(self.inputs)

    def batches(
        self, batch_size: int, seed: int, start: int = 0, host: int = 0, hosts: int = 1
    ) -> Iterator[dict[str, np.ndarray]]:
        """Endless global batches of rows packed from shuffled epochs (``data.epochs``),
        positioned at batch ``start``; each host yields its rows ``host::hosts``."""
        return epochs.packed_batches(
            self.inputs,
            self.targets,
            self.lengths,
            batch_size=batch_size,
            seed=seed,
            start=start,
            host=host,
            hosts=hosts,
        )


def batch_rows(cfg: StudentConfig, pairs: TokenizedPairs) -> TokenizedPairs | PackedPairs:
    """The pairs as the student's batch rows: packed into fitted lengths when it packs."""
    return PackedPairs(pairs, cfg.packed_row_tokens) if cfg.pack else pairs


@dataclasses.dataclass(frozen=True)
class SeqioTask:
    """A registered SeqIO task to train on, with the feature lengths to trim or pack to."""

    name: str
    lengths: dict


@dataclasses.dataclass(frozen=True)
class TrainPlan:
    """What one training run needs: ``train.model`` is the T5Config; ``data`` the source;
    ``rows`` the in-memory pairs (packed or not) it was planned from, if any."""

    train: TrainConfig
    data: TokenizedPairs | PackedPairs | DatasetConfig
    batch_size: int  # global rows per step; a DatasetConfig source carries the same
    gin: tuple[str, ...] = ()  # extra bindings for the gin consumer (t5x style)
    rows: TokenizedPairs | PackedPairs | None = None


def activation_dtype(cfg: StudentConfig) -> str:
    """The student's dtype; "auto" is float32 on CPU (bf16 matmuls are emulated there), else
    bfloat16."""
    if cfg.dtype != "auto":
        return cfg.dtype
    import jax

    return "float32" if jax.default_backend() == "cpu" else "bfloat16"


def model_config(cfg: StudentConfig, vocab_size: int) -> Any:
    """The T5Config: the preset, the student's knobs, its overrides, a vocab-sized embedding."""
    from scicot_jax.model import T5Config

    owned = sorted(set(cfg.overrides) & set(OWNED_MODEL_FIELDS))
    if owned:
        raise ValueError(
            f"student overrides {owned}: set them with the student's own settings "
            "(StudentConfig.dropout_rate / dtype, --student.dropout_rate / --student.dtype)"
        )
    overrides = {"dropout_rate": cfg.dropout_rate, "dtype": activation_dtype(cfg), **cfg.overrides}
    overrides.setdefault("vocab_size", round_up(vocab_size, 128))
    return T5Config.preset(cfg.size, **overrides)


def steps_for(cfg: StudentConfig, stage: str) -> int:
    """Training steps of a stage: stage2_steps / scorer_steps when set, else steps."""
    steps = {
        "stage2": cfg.stage2_steps,
        "scorer": cfg.scorer_steps or max(1, cfg.steps // 2),
    }.get(stage)
    return steps or cfg.steps


def build(
    cfg: StudentConfig,
    model: Any,
    out_dir: str | Path,
    stage: str,
    data: TokenizedPairs | PackedPairs | SeqioTask,
    steps: int | None = None,
    task: str | None = None,
    seed: int = 0,
) -> TrainPlan:
    """The plan of one stage on in-memory pairs or a SeqIO task, for ``steps`` (default: the
    stage's configured steps). Pairs with ``task`` (the SeqIO task registered from the same
    pairs, in order) plan the gin trainer on that task at the pairs' own lengths (packed:
    fitted once, by ``batch_rows``) and in their epoch order, so either trainer sees the same
    batches. ``seed`` (the run's) draws the initial parameters, dropout and data order."""
    steps = steps or steps_for(cfg, stage)
    rows = None
    if isinstance(data, TokenizedPairs | PackedPairs):
        rows = data if isinstance(data, PackedPairs) else batch_rows(cfg, data)
        lengths = rows.lengths
        data = rows if task is None else _dataset(cfg, task, lengths, "epochs", seed)
    else:
        data = _dataset(cfg, data.name, data.lengths, "seqio", seed)
        data = fit_packed_lengths(data)  # the model's lengths: fitted once, here
        lengths = data.task_feature_lengths
    optimizer = OptimizerConfig(
        name=cfg.optimizer,
        learning_rate=cfg.learning_rate,
        schedule=cfg.schedule,
        warmup_steps=int(cfg.warmup_fraction * steps),
        weight_decay=cfg.weight_decay,
        clip_grad_norm=cfg.clip_grad_norm,
    )
    checkpoint = CheckpointConfig(
        period=steps,
        keep=1,
        async_save=False,
        initial_path=cfg.init_checkpoint,
        initial_params_only=True,  # a pretrained start: stage steps count from 0
    )
    train = TrainConfig(
        model_dir=str(out_dir),
        train_steps=steps,
        model=model,
        optimizer=optimizer,
        loss=LossConfig(),
        checkpoint=checkpoint,
        seed=seed,
        feature_lengths=dict(lengths),
        log_period=max(1, steps // 5),
        handle_sigterm=False,
    )
    return TrainPlan(train, data, cfg.batch_size, tuple(cfg.gin), rows)


def _dataset(cfg: StudentConfig, name: str, lengths: dict, order: str, seed: int) -> DatasetConfig:
    """The SeqIO train split as the student reads it; in "epochs" order the lengths are final
    (packed: already fitted), in "seqio" order packed lengths are fitted to the split."""
    refit = cfg.pack and order == "seqio"
    return DatasetConfig(
        mixture_or_task_name=name,
        task_feature_lengths=dict(lengths),
        split="train",
        batch_size=cfg.batch_size,
        shuffle=True,
        seed=seed,
        pack=cfg.pack,
        packed_row_tokens=cfg.packed_row_tokens if refit else None,
        order=order,
    )


def train_in_process(plan: TrainPlan) -> Any:
    """Run the plan with the library trainer; returns its TrainResult (with the final state)."""
    import jax

    from scicot_jax.train import trainer

    tc, data = plan.train, plan.data
    if isinstance(data, TokenizedPairs | PackedPairs):

        def batches(start: int) -> Iterator[dict[str, np.ndarray]]:
            return data.batches(
                plan.batch_size, tc.seed, start, jax.process_index(), jax.process_count()
            )
    else:
        batches = train_batches(data)
    return trainer.train(tc, batches, return_state=True)


# TrainConfig's scalars under the train binary's (t5x's) argument names. The binary sets the
# other fields itself: feature lengths come with the DatasetConfig; prefetch, SIGTERM handling
# and the progress line are its own.
BINARY_SCALARS = {
    "model_dir": "model_dir",
    "train_steps": "total_steps",
    "num_microbatches": "num_microbatches",
    "seed": "random_seed",
    "log_period": "stats_period",
    "eval_period": "eval_period",
    "eval_steps": "eval_steps",
}
BINARY_OWN_FIELDS = ("feature_lengths", "prefetch", "handle_sigterm", "progress")
# The binary's dropout keys: its use_hardware_rng switch, by the implementation it chooses.
_HARDWARE_RNG = {impl: flag for flag, impl in train_cli.DROPOUT_RNG_IMPL.items()}


def gin_bindings(plan: TrainPlan) -> list[str]:
    """The plan as bindings of the train binary (``scicot_jax.train.cli.run``)."""
    tc = plan.train
    if isinstance(plan.data, TokenizedPairs | PackedPairs):
        raise ValueError("the gin train binary reads a SeqIO task, not in-memory pairs")

    def objs(scope: str, obj: Any) -> list[str]:
        return [f"{scope}.{f.name} = {getattr(obj, f.name)!r}" for f in dataclasses.fields(obj)]

    if tc.dropout_rng_impl not in _HARDWARE_RNG:
        raise ValueError(
            f"TrainConfig.dropout_rng_impl={tc.dropout_rng_impl!r}: the train binary's "
            f"use_hardware_rng chooses only between {sorted(_HARDWARE_RNG)}"
        )
    # TrainConfig's objects as the binary's; its scalars under t5x's names (eval off: no
    # eval dataset); the batch size is the DatasetConfig's.
    return [
        "train.model = @T5Config()",
        *objs("T5Config", tc.model),
        "train.train_dataset_cfg = @train/DatasetConfig()",
        *objs("train/DatasetConfig", plan.data),
        "train.optimizer = @OptimizerConfig()",
        *objs("OptimizerConfig", tc.optimizer),
        "train.loss = @LossConfig()",
        *objs("LossConfig", tc.loss),
        "train.checkpoint_cfg = @CheckpointConfig()",
        *objs("CheckpointConfig", tc.checkpoint),
        "train.partitioning_cfg = @PartitioningConfig()",
        *objs("PartitioningConfig", tc.partitioning),
        *(f"train.{name} = {getattr(tc, field)!r}" for field, name in BINARY_SCALARS.items()),
        f"train.use_hardware_rng = {_HARDWARE_RNG[tc.dropout_rng_impl]!r}",
    ]


def train_with_gin(plan: TrainPlan) -> Any:
    """Run the plan through the train binary's gin-configurable ``run`` (as
    ``python -m scicot_jax.train`` would, config.gin written); returns its TrainResult."""
    import gin
    from scicot_jax.runtime import gin_utils

    with gin.unlock_config():
        gin.clear_config()
        try:
            gin_utils.parse_gin([], [*gin_bindings(plan), *plan.gin])
            return train_cli.run()
        finally:
            gin.clear_config()
