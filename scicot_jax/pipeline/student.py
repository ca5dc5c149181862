"""The in-process T5 student: trains with the library trainer on numpy batches, decodes, scores.

Texts are tokenized with the run's SentencePiece vocabulary and padded to fixed lengths (the
longest example rounded up to a multiple of 8, capped by the card's feature lengths), so each
stage compiles once. This path is for small runs (CPU demo, tests, quick experiments); large
runs go through the gin binaries and the SeqIO tasks (see ``pipeline.gin_student``).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from scicot_jax.data.tokens import pad_rows, shift_right, with_eos
from scicot_jax.pipeline.config import StudentConfig

log = logging.getLogger(__name__)

STUDENT_FILE = "student.json"  # written next to the checkpoints: lengths the student saw


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
        enc = [with_eos(vocab.encode(i), max_inputs, model.eos_id) for i, _ in pairs]
        dec = [with_eos(vocab.encode(t), max_targets, model.eos_id) for _, t in pairs]
        self.truncated = sum(len(vocab.encode(i)) >= max_inputs for i, _ in pairs) + sum(
            len(vocab.encode(t)) >= max_targets for _, t in pairs
        )
        self.inputs_length = min(max_inputs, round_up(max(len(e) for e in enc)))
        self.targets_length = min(max_targets, round_up(max(len(d) for d in dec)))
        self.encoder_BxL = pad_rows(enc, self.inputs_length, model.pad_id)
        self.targets_BxL = pad_rows(dec, self.targets_length, model.pad_id)
        self.tokens_per_example = float(np.mean([len(e) + len(d) for e, d in zip(enc, dec)]))

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


class T5Student:
    """Student trainer/decoder/scorer over the library API (see ``pipeline.run.Student``)."""

    def __init__(self, cfg: StudentConfig, card: Any = None, task: str | None = None):
        self.cfg = cfg
        if card is None and task is not None:
            from scicot_jax.data.cards import load_card

            card = load_card(task)
        lengths = dict(getattr(card, "feature_lengths", None) or {"inputs": 512, "targets": 128})
        self.max_inputs = cfg.inputs_length or lengths["inputs"]
        self.max_targets = cfg.targets_length or lengths["targets"]
        self._vocab_spec = None if cfg.vocab == "task" else cfg.vocab
        self._vocab: Any = None
        self._model: Any = None
        self._params: dict[str, Any] = {}
        self._configs: dict[str, Any] = {}
        self._mesh: Any = None

    @property
    def vocab_spec(self) -> str | None:
        """What ``get_vocabulary`` is given: a path, "t5", or None (demo)."""
        return self._vocab_spec

    def use_vocab(self, path: str | Path) -> None:
        """Switch to the vocabulary at ``path`` (the pipeline's task vocabulary)."""
        self._vocab_spec, self._vocab, self._model = str(path), None, None

    @property
    def vocab(self) -> Any:
        if self._vocab is None:
            if self.cfg.vocab == "task" and self._vocab_spec is None:
                raise RuntimeError("vocab='task' needs use_vocab(path) before use")
            from scicot_jax.data import vocab as vocab_lib

            self._vocab = vocab_lib.get_vocabulary(self._vocab_spec)
        return self._vocab

    @property
    def model(self) -> Any:
        """T5Config: the preset, the overrides, and a vocabulary size that fits the vocab."""
        if self._model is None:
            import jax

            from scicot_jax.model import T5Config

            overrides = dict(self.cfg.overrides)
            overrides.setdefault("vocab_size", round_up(self.vocab.vocab_size, 128))
            if jax.default_backend() == "cpu":
                overrides.setdefault("dtype", "float32")  # bf16 matmuls are emulated on CPU
            self._model = T5Config.preset(self.cfg.size, **overrides)
        return self._model

    # ------------------------------------------------------------------ training
    def train_config(self, out_dir: Path, data: TokenizedPairs, steps: int) -> Any:
        from scicot_jax.train.optimizers import OptimizerConfig
        from scicot_jax.train.trainer import TrainConfig

        c = self.cfg
        opt = OptimizerConfig(
            name=c.optimizer,
            learning_rate=c.learning_rate,
            schedule=c.schedule,
            warmup_steps=int(c.warmup_fraction * steps),
            weight_decay=c.weight_decay,
            clip_grad_norm=1.0 if c.optimizer == "adamw" else None,
        )
        return TrainConfig(
            model_dir=str(out_dir),
            train_steps=steps,
            batch_size=c.batch_size,
            model=self.model,
            optimizer=opt,
            seed=c.seed,
            feature_lengths={"inputs": data.inputs_length, "targets": data.targets_length},
            checkpoint_period=steps,
            keep_checkpoints=1,
            async_checkpoints=False,
            log_period=max(1, steps // 5),
            handle_sigterm=False,
            initial_checkpoint_path=c.init_checkpoint,
            initial_params_only=True,  # a pretrained start: stage steps count from 0
        )

    def steps_for(self, stage: str) -> int:
        """Training steps of a stage: stage2_steps / scorer_steps when set, else steps."""
        steps = {
            "stage2": self.cfg.stage2_steps,
            "scorer": self.cfg.scorer_steps or max(1, self.cfg.steps // 2),
        }.get(stage)
        return steps or self.cfg.steps

    def train(
        self,
        pairs: Sequence[tuple[str, str]],
        out_dir: Path,
        *,
        stage: str,
        task: str | None = None,
        steps: int | None = None,
    ) -> dict:
        """Train a fresh student on ``pairs`` into ``out_dir`` for ``steps`` (default: the
        stage's configured steps); resumes from its checkpoints. (``task``, the SeqIO name of
        the same data, is for the gin trainer; unused here.)"""
        import jax

        from scicot_jax.train import trainer

        steps = steps or self.steps_for(stage)
        data = TokenizedPairs(self.vocab, self.model, pairs, self.max_inputs, self.max_targets)
        if data.truncated:
            log.warning(
                "%s: %d texts truncated to %d/%d tokens",
                stage,
                data.truncated,
                self.max_inputs,
                self.max_targets,
            )
        tc = self.train_config(out_dir, data, steps)
        res = trainer.train(
            tc,
            lambda start: data.batches(
                tc.batch_size, self.cfg.seed, start, jax.process_index(), jax.process_count()
            ),
            return_state=True,
        )
        ckpt = str(out_dir)
        if res.state is not None:
            self._params[ckpt] = res.state.params
        lengths = {"inputs": data.inputs_length, "targets": data.targets_length}
        (out_dir / STUDENT_FILE).write_text(json.dumps({"lengths": lengths, "stage": stage}))
        return {
            "checkpoint": ckpt,
            "steps": res.step,
            "train_tokens": int(res.step * tc.batch_size * data.tokens_per_example),
            "train_flops": self.train_flops(res.step, lengths),
            "final_loss": res.metrics.get("loss"),
            "final_accuracy": res.metrics.get("accuracy"),
            "lengths": lengths,
            "truncated": data.truncated,
        }

    def tokens_per_example(self, pairs: Sequence[tuple[str, str]]) -> float:
        """Mean tokens (inputs + targets, with EOS, cut to the max lengths) per pair."""
        n = sum(
            min(len(self.vocab.encode(i)) + 1, self.max_inputs)
            + min(len(self.vocab.encode(t)) + 1, self.max_targets)
            for i, t in pairs
        )
        return n / max(1, len(pairs))

    def train_flops(self, steps: int, lengths: dict[str, int]) -> int:
        """Training FLOPs of ``steps`` batches at the padded ``lengths`` (forward + backward)."""
        from scicot_jax.model.flops import flops_per_example

        per = flops_per_example(self.model, lengths["inputs"], lengths["targets"])
        return int(steps * self.cfg.batch_size * per)

    def params(self, checkpoint: str) -> Any:
        """Params of a trainer model dir or any initial checkpoint (HF, orbax), cached."""
        if checkpoint not in self._params:
            from scicot_jax.runtime import inference

            _, self._params[checkpoint] = inference.load_model(checkpoint, self.model, self.mesh)
        return self._params[checkpoint]

    def model_for(self, checkpoint: str) -> Any:
        """The T5Config to decode ``checkpoint`` with."""
        return self.model

    @property
    def mesh(self) -> Any:
        if self._mesh is None:
            from scicot_jax.runtime import partitioning

            self._mesh = partitioning.make_mesh()
        return self._mesh

    # ------------------------------------------------------------------ decoding and scoring
    def decode_length(self, checkpoint: str) -> int:
        """Longest output to decode: the student's training target length (outputs of the same
        kind), else the card's target length."""
        info = Path(checkpoint) / STUDENT_FILE
        if info.exists():
            return int(json.loads(info.read_text())["lengths"]["targets"])
        return self.max_targets

    def _tokens(self, texts: Sequence[str], limit: int) -> tuple[list[list[int]], int]:
        """Token lists ending in EOS (cut to ``limit``) and a padded length for them, in steps
        of 64 so that splits of similar lengths share one compiled decoder."""
        rows = [with_eos(self.vocab.encode(t), limit, self.model.eos_id) for t in texts]
        return rows, min(limit, round_up(max(len(r) for r in rows), 64))

    def predict(self, checkpoint: str, inputs: Sequence[str], *, stage: str) -> list[str]:
        """Greedy decodes, batched and sharded over the data axis."""
        if not inputs:
            return []
        from scicot_jax.runtime import inference

        rows, length = self._tokens(inputs, self.max_inputs)
        outs = inference.predict(
            self.params(checkpoint),
            self.model_for(checkpoint),
            self.mesh,
            rows,
            input_length=length,
            max_decode_length=self.decode_length(checkpoint),
            batch_size=self.cfg.eval_batch_size,
        )
        return [self.vocab.decode(tokens[0]) for tokens, _ in outs]

    def score(self, checkpoint: str, pairs: Sequence[tuple[str, str]]) -> list[float]:
        """Mean token NLL of each target given its input (the RD of MoRSD for stage-2 pairs)."""
        if not pairs:
            return []
        from scicot_jax.runtime import inference

        enc, enc_len = self._tokens([i for i, _ in pairs], self.max_inputs)
        tgt, tgt_len = self._tokens([t for _, t in pairs], self.max_targets)
        res = inference.score(
            self.params(checkpoint),
            self.model_for(checkpoint),
            self.mesh,
            enc,
            tgt,
            input_length=enc_len,
            target_length=tgt_len,
            batch_size=self.cfg.eval_batch_size,
        )
        return [-r["mean_logprob"] for r in res]
