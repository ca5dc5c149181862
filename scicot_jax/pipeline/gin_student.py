"""The student through the gin train binary on the SeqIO registry's tasks (``--trainer gin``).

Training runs ``scicot_jax.train`` in-process with ``models/<size>.gin`` + ``runs/finetune.gin``
and t5x-style macros (MODEL_DIR, MIXTURE_OR_TASK_NAME, TRAIN_STEPS, BATCH_SIZE, ...), so data
goes through SeqIO (tokenization, packing with EncDecFeatureConverter, per-host sharding) as in
a t5x run; user ``--gin KEY=VALUE`` bindings come last and win. Decoding and scoring use the
checkpoint's own config through ``scicot_jax.runtime.inference`` (inherited from T5Student).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from scicot_jax.pipeline.student import STUDENT_FILE, T5Student


class GinStudent(T5Student):
    """Trains from a registered SeqIO task name; see the module docstring."""

    needs_seqio = True

    def argv(self, out_dir: Path, task: str, steps: int, lengths: dict[str, int]) -> list[str]:
        """The train binary's command line for one stage."""
        c = self.cfg
        argv = [
            "scicot-train",
            f"--gin_file=models/{c.size}.gin",
            "--gin_file=runs/finetune.gin",
            f"--gin.MODEL_DIR='{out_dir}'",
            f"--gin.MIXTURE_OR_TASK_NAME='{task}'",
            f"--gin.TRAIN_STEPS={steps}",
            f"--gin.BATCH_SIZE={c.batch_size}",
            f"--gin.LEARNING_RATE={c.learning_rate}",
            f"--gin.TASK_FEATURE_LENGTHS={lengths}",
            f"--gin.CHECKPOINT_PERIOD={steps}",
            "--gin.EVAL_PERIOD=0",
            f"--gin.VOCAB_SIZE={self.model.vocab_size}",
            f"--gin.OptimizerConfig.name='{c.optimizer}'",
            f"--gin.OptimizerConfig.schedule='{c.schedule}'",
            f"--gin.OptimizerConfig.warmup_steps={int(c.warmup_fraction * steps)}",
            f"--gin.OptimizerConfig.weight_decay={c.weight_decay}",
            f"--gin.RANDOM_SEED={c.seed}",
            # the in-process student's per-token mean (t5x's t5_1_1 default is the sum)
            "--gin.LOSS_NORMALIZING_FACTOR='NUM_REAL_TARGET_TOKENS'",
        ]
        if c.init_checkpoint:
            argv.append(f"--gin.INITIAL_CHECKPOINT_PATH='{c.init_checkpoint}'")
            argv.append("--gin.INITIAL_CHECKPOINT_PARAMS_ONLY=True")  # stage steps count from 0
        for key, value in c.overrides.items():
            argv.append(f"--gin.T5Config.{key}={value!r}")
        argv += [f"--gin.{b}" for b in c.gin]
        return argv

    def train(
        self,
        pairs: Sequence[tuple[str, str]],
        out_dir: Path,
        *,
        stage: str,
        task: str | None = None,
        steps: int | None = None,
    ) -> dict:
        """Train on the registered SeqIO ``task`` (``pairs`` only size the feature lengths)
        for ``steps`` (default: the stage's configured steps)."""
        if task is None:
            raise ValueError(f"{stage}: the gin trainer needs a registered SeqIO task")
        from scicot_jax.train import cli

        steps = steps or self.steps_for(stage)
        enc, enc_len = self._tokens([i for i, _ in pairs], self.max_inputs)
        tgt, tgt_len = self._tokens([t for _, t in pairs], self.max_targets)
        lengths = {"inputs": enc_len, "targets": tgt_len}
        res = cli.main(self.argv(out_dir, task, steps, lengths))
        tokens = sum(len(e) + len(t) for e, t in zip(enc, tgt)) / max(1, len(enc))
        (out_dir / STUDENT_FILE).write_text(
            json.dumps({"lengths": lengths, "stage": stage, "task": task})
        )
        return {
            "checkpoint": str(out_dir),
            "steps": res.step,
            "task": task,
            "train_tokens": int(res.step * self.cfg.batch_size * tokens),
            "train_flops": self.train_flops(res.step, lengths),
            "final_loss": res.metrics.get("loss"),
            "lengths": lengths,
        }

    def params(self, checkpoint: str) -> Any:
        """Params with the checkpoint's own model config (the gin model may differ)."""
        if checkpoint not in self._params:
            from scicot_jax.runtime import inference

            config, self._params[checkpoint] = inference.load_model(checkpoint, None, self.mesh)
            self._configs[checkpoint] = config
        return self._params[checkpoint]

    def model_for(self, checkpoint: str) -> Any:
        self.params(checkpoint)
        return self._configs[checkpoint]
