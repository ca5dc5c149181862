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
import itertools
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from scicot_jax.data import packing
from scicot_jax.data.tokens import pad_rows, shift_right, with_eos
from scicot_jax.pipeline.config import StudentConfig

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
        tgt = self.targets_BxL[idx]
        return {
            "encoder_input_tokens": self.encoder_BxL[idx],
            "decoder_target_tokens": tgt,
            "decoder_input_tokens": shift_right(tgt, self.model.decoder_start_id),
            "decoder_loss_weights": (tgt != self.model.pad_id).astype(np.float32),
        }

    def batches(
        self, batch_size: int, seed: int, start: int = 0, host: int = 0, hosts: int = 1
    ) -> Iterator[dict[str, np.ndarray]]:
        """Endless shuffled epochs of global batches, positioned at batch ``start`` (the trainer
        resumes with it); on multi-host runs each host yields its rows ``host::hosts``."""
        n = len(self)
        per_epoch = max(1, n // batch_size) if n >= batch_size else 1
        step = start
        while True:
            epoch, k = divmod(step, per_epoch)
            order = np.random.default_rng((seed, epoch)).permutation(n)
            if n < batch_size:  # tiny data: repeat to fill a batch
                order = np.resize(order, batch_size)
            yield self.batch(order[k * batch_size : (k + 1) * batch_size][host::hosts])
            step += 1


class PackedPairs:
    """TokenizedPairs packed best-fit (data.packing) into rows of lengths fitted to them within
    `row_tokens`: SeqIO's packed features, so model and loss are those of the SeqIO feed."""

    def __init__(self, pairs: TokenizedPairs, row_tokens: int):
        model = pairs.model
        if model.pad_id != 0 or model.decoder_start_id != 0:  # SeqIO's packed features' ids
            raise ValueError("packing needs pad_id = decoder_start_id = 0 (T5's)")
        self.model = model
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
        """Endless global batches of rows packed from shuffled epochs (seeded as TokenizedPairs'),
        positioned at batch ``start`` by replaying the stream (packing is a pure function of
        it); each host yields its rows ``host::hosts``."""

        def examples() -> Iterator[dict[str, np.ndarray]]:
            for epoch in itertools.count():
                for i in np.random.default_rng((seed, epoch)).permutation(len(self)):
                    yield {"inputs": self.inputs[i], "targets": self.targets[i]}

        rows = packing.pack_examples(examples(), self.lengths)
        for b in itertools.islice(packing.batch_rows(rows, batch_size), start, None):
            yield {k: v[host::hosts] for k, v in b.items()}


@dataclasses.dataclass(frozen=True)
class SeqioTask:
    """A registered SeqIO task to train on, with the feature lengths to trim or pack to."""

    name: str
    lengths: dict


@dataclasses.dataclass(frozen=True)
class TrainPlan:
    """What one training run needs: ``train.model`` is the T5Config; ``data`` the source."""

    train: Any  # TrainConfig
    data: Any  # TokenizedPairs | PackedPairs | DatasetConfig
    gin: tuple[str, ...] = ()  # extra bindings for the gin consumer (t5x style)


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
            "(StudentConfig.dropout_rate / dtype, --dropout / --dtype)"
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
    data: TokenizedPairs | SeqioTask,
    steps: int | None = None,
) -> TrainPlan:
    """The plan of one stage on in-memory pairs or a SeqIO task, for ``steps`` (default: the
    stage's configured steps)."""
    from scicot_jax.data.seqio_feed import DatasetConfig, fit_packed_lengths
    from scicot_jax.train.optimizers import OptimizerConfig
    from scicot_jax.train.step import LossConfig
    from scicot_jax.train.trainer import TrainConfig

    steps = steps or steps_for(cfg, stage)
    if isinstance(data, TokenizedPairs):
        data = PackedPairs(data, cfg.packed_row_tokens) if cfg.pack else data
        lengths = data.lengths
    else:
        data = DatasetConfig(
            mixture_or_task_name=data.name,
            task_feature_lengths=dict(data.lengths),
            split="train",
            batch_size=cfg.batch_size,
            shuffle=True,
            seed=cfg.seed,
            pack=cfg.pack,
            packed_row_tokens=cfg.packed_row_tokens if cfg.pack else None,
        )
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
    train = TrainConfig(
        model_dir=str(out_dir),
        train_steps=steps,
        batch_size=cfg.batch_size,
        model=model,
        optimizer=optimizer,
        loss=LossConfig(),
        seed=cfg.seed,
        feature_lengths=dict(lengths),
        checkpoint_period=steps,
        keep_checkpoints=1,
        async_checkpoints=False,
        log_period=max(1, steps // 5),
        handle_sigterm=False,
        initial_checkpoint_path=cfg.init_checkpoint,
        initial_params_only=True,  # a pretrained start: stage steps count from 0
    )
    return TrainPlan(train, data, tuple(cfg.gin))


def train_in_process(plan: TrainPlan) -> Any:
    """Run the plan with the library trainer; returns its TrainResult (with the final state)."""
    import jax

    from scicot_jax.train import trainer

    tc, data = plan.train, plan.data
    if isinstance(data, TokenizedPairs | PackedPairs):

        def batches(start: int) -> Iterator[dict[str, np.ndarray]]:
            return data.batches(
                tc.batch_size, tc.seed, start, jax.process_index(), jax.process_count()
            )
    else:
        from scicot_jax.data.seqio_feed import train_batches

        batches = train_batches(data)
    return trainer.train(tc, batches, return_state=True)


def gin_bindings(plan: TrainPlan) -> list[str]:
    """The plan as bindings of the train binary (``scicot_jax.train.cli.run``)."""
    tc = plan.train
    if isinstance(plan.data, TokenizedPairs | PackedPairs):
        raise ValueError("the gin train binary reads a SeqIO task, not in-memory pairs")

    def objs(scope: str, obj: Any) -> list[str]:
        return [f"{scope}.{f.name} = {getattr(obj, f.name)!r}" for f in dataclasses.fields(obj)]

    run_args = {
        "model_dir": tc.model_dir,
        "train_steps": tc.train_steps,
        "num_microbatches": tc.num_microbatches,
        "checkpoint_period": tc.checkpoint_period,
        "keep_checkpoints": tc.keep_checkpoints,
        "async_checkpoints": tc.async_checkpoints,
        "log_period": tc.log_period,
        "eval_period": 0,
        "initial_checkpoint_path": tc.initial_checkpoint_path,
        "initial_params_only": tc.initial_params_only,
        "model_parallel": tc.model_parallel,
        "seed": tc.seed,
    }
    return [
        "train.model = @T5Config()",
        *objs("T5Config", tc.model),
        "train.train_dataset = @train/DatasetConfig()",
        *objs("train/DatasetConfig", plan.data),
        "train.optimizer = @OptimizerConfig()",
        *objs("OptimizerConfig", tc.optimizer),
        "train.loss = @LossConfig()",
        *objs("LossConfig", tc.loss),
        *(f"train.{k} = {v!r}" for k, v in run_args.items()),
    ]


def train_with_gin(plan: TrainPlan) -> Any:
    """Run the plan through the train binary's gin-configurable ``run`` (as
    ``python -m scicot_jax.train`` would, config.gin written); returns its TrainResult."""
    import gin
    from scicot_jax.runtime import gin_utils
    from scicot_jax.train import cli

    with gin.unlock_config():
        gin.clear_config()
        try:
            gin_utils.parse_gin([], [*gin_bindings(plan), *plan.gin])
            return cli.run()
        finally:
            gin.clear_config()
