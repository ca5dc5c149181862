"""The in-process T5 student: trains with the library trainer on numpy batches, decodes, scores.

Texts are tokenized with the run's SentencePiece vocabulary and padded to fixed lengths (the
longest example rounded up to a multiple of 8, capped by the card's feature lengths), so each
stage compiles once. This path is for small runs (CPU demo, tests, quick experiments); large
runs go through the gin binaries and the SeqIO tasks (see ``pipeline.gin_student``).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from scicot_jax.pipeline.config import StudentConfig

log = logging.getLogger(__name__)

PAD, EOS = 0, 1


def round_up(n: int, k: int = 8) -> int:
    return max(k, -(-n // k) * k)


def pad_rows(rows: Sequence[Sequence[int]], length: int) -> np.ndarray:
    """int32 [len(rows), length], zero padded (rows already fit)."""
    out = np.zeros((len(rows), length), np.int32)
    for i, r in enumerate(rows):
        out[i, : len(r)] = r
    return out


def shift_right(targets_BxL: np.ndarray) -> np.ndarray:
    """Decoder inputs: targets shifted right with 0 as BOS."""
    out = np.zeros_like(targets_BxL)
    out[:, 1:] = targets_BxL[:, :-1]
    return out


class TokenizedPairs:
    """(inputs, targets) texts as fixed-length token arrays."""

    def __init__(self, vocab: Any, pairs: Sequence[tuple[str, str]], max_inputs: int,
                 max_targets: int):
        enc = [list(vocab.encode(i))[: max_inputs - 1] + [EOS] for i, _ in pairs]
        dec = [list(vocab.encode(t))[: max_targets - 1] + [EOS] for _, t in pairs]
        self.truncated = sum(len(vocab.encode(i)) >= max_inputs for i, _ in pairs) + sum(
            len(vocab.encode(t)) >= max_targets for _, t in pairs)
        self.inputs_length = min(max_inputs, round_up(max(len(e) for e in enc)))
        self.targets_length = min(max_targets, round_up(max(len(d) for d in dec)))
        self.encoder_BxL = pad_rows(enc, self.inputs_length)
        self.targets_BxL = pad_rows(dec, self.targets_length)
        self.tokens_per_example = float(np.mean([len(e) + len(d) for e, d in zip(enc, dec)]))

    def __len__(self) -> int:
        return len(self.encoder_BxL)

    def batch(self, idx: np.ndarray) -> dict[str, np.ndarray]:
        tgt = self.targets_BxL[idx]
        return {"encoder_input_tokens": self.encoder_BxL[idx], "decoder_target_tokens": tgt,
                "decoder_input_tokens": shift_right(tgt),
                "decoder_loss_weights": (tgt > 0).astype(np.float32)}

    def batches(self, batch_size: int, seed: int, start: int = 0) -> Iterator[dict[str, np.ndarray]]:
        """Endless shuffled epochs, positioned at batch ``start`` (the trainer resumes with it)."""
        n = len(self)
        per_epoch = max(1, n // batch_size) if n >= batch_size else 1
        step = start
        while True:
            epoch, k = divmod(step, per_epoch)
            order = np.random.default_rng((seed, epoch)).permutation(n)
            if n < batch_size:  # tiny data: repeat to fill a batch
                order = np.resize(order, batch_size)
            yield self.batch(order[k * batch_size : (k + 1) * batch_size])
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
        self._decoders: dict[Any, Any] = {}

    def use_vocab(self, path: str | Path) -> None:
        """Switch to the vocabulary at ``path`` (the pipeline's task vocabulary)."""
        self._vocab_spec, self._vocab, self._model = str(path), None, None
        self._decoders.clear()

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
        opt = OptimizerConfig(name=c.optimizer, learning_rate=c.learning_rate,
                              schedule=c.schedule, warmup_steps=int(c.warmup_fraction * steps),
                              clip_grad_norm=1.0 if c.optimizer == "adamw" else None)
        return TrainConfig(model_dir=str(out_dir), train_steps=steps, batch_size=c.batch_size,
                           model=self.model, optimizer=opt, seed=c.seed,
                           feature_lengths={"inputs": data.inputs_length,
                                            "targets": data.targets_length},
                           checkpoint_period=steps, keep_checkpoints=1, async_checkpoints=False,
                           log_period=max(1, steps // 5), initial_checkpoint_path=c.init_checkpoint,
                           handle_sigterm=False)

    def train(self, pairs: Sequence[tuple[str, str]], out_dir: Path, *, stage: str) -> dict:
        """Train a fresh student on ``pairs`` into ``out_dir``; resumes from its checkpoints."""
        from scicot_jax.train import trainer

        steps = {"stage2": self.cfg.stage2_steps,
                 "scorer": self.cfg.scorer_steps or max(1, self.cfg.steps // 2)}.get(stage)
        steps = steps or self.cfg.steps
        data = TokenizedPairs(self.vocab, pairs, self.max_inputs, self.max_targets)
        if data.truncated:
            log.warning("%s: %d texts truncated to %d/%d tokens", stage, data.truncated,
                        self.max_inputs, self.max_targets)
        tc = self.train_config(out_dir, data, steps)
        res = trainer.train(tc, lambda start: data.batches(tc.batch_size, self.cfg.seed, start),
                            return_state=True)
        ckpt = str(out_dir)
        if res.state is not None:
            self._params[ckpt] = res.state.params
        return {"checkpoint": ckpt, "steps": res.step, "train_tokens":
                int(res.step * tc.batch_size * data.tokens_per_example),
                "final_loss": res.metrics.get("loss"), "final_accuracy": res.metrics.get("accuracy"),
                "lengths": {"inputs": data.inputs_length, "targets": data.targets_length},
                "truncated": data.truncated}

    def params(self, checkpoint: str) -> Any:
        """Params of a trainer model dir (cached), or of an initial checkpoint (HF, orbax)."""
        if checkpoint not in self._params:
            from scicot_jax.train import checkpoints

            step_dir = checkpoints.resolve_step_dir(checkpoint)
            if step_dir is not None:
                self._params[checkpoint] = checkpoints.restore_params(step_dir)
            else:
                import jax

                from scicot_jax.model import init_params
                from scicot_jax.train.init_from import load_initial_params

                abstract = jax.eval_shape(lambda: init_params(self.model, jax.random.key(0)))
                shardings = jax.tree.map(lambda _: None, abstract)
                self._params[checkpoint] = load_initial_params(checkpoint, abstract, shardings,
                                                               self.model)
        return self._params[checkpoint]

    # ------------------------------------------------------------------ decoding and scoring
    def _encode_inputs(self, texts: Sequence[str]) -> tuple[np.ndarray, int]:
        rows = [list(self.vocab.encode(t))[: self.max_inputs - 1] + [EOS] for t in texts]
        length = min(self.max_inputs, round_up(max(len(r) for r in rows), 16))
        return pad_rows(rows, length), length

    def _generate_fn(self, max_len: int) -> Any:
        key = ("greedy", max_len)
        if key not in self._decoders:
            import jax

            from scicot_jax.model import decoding

            self._decoders[key] = jax.jit(lambda p, x: decoding.generate(
                p, self.model, x, max_decode_length=max_len, method="greedy"))
        return self._decoders[key]

    def predict(self, checkpoint: str, inputs: Sequence[str], *, stage: str) -> list[str]:
        """Greedy decodes, in batches of eval_batch_size (last batch padded: one compile)."""
        if not inputs:
            return []
        params = self.params(checkpoint)
        enc_NxL, _ = self._encode_inputs(inputs)
        max_len = self.max_targets
        fn = self._generate_fn(max_len)
        bs = self.cfg.eval_batch_size
        outs: list[str] = []
        for s in range(0, len(inputs), bs):
            chunk = enc_NxL[s : s + bs]
            n = len(chunk)
            if n < bs:
                chunk = np.concatenate([chunk, np.zeros((bs - n, chunk.shape[1]), np.int32)])
            tokens_BxDxL, _ = fn(params, chunk)
            for row in np.asarray(tokens_BxDxL)[:n, 0]:
                ids = row.tolist()
                ids = ids[: ids.index(EOS)] if EOS in ids else ids
                outs.append(self.vocab.decode([i for i in ids if i != PAD]))
        return outs

    def score(self, checkpoint: str, pairs: Sequence[tuple[str, str]]) -> list[float]:
        """Mean token NLL of each target given its input (the RD of MoRSD for stage-2 pairs)."""
        if not pairs:
            return []
        import jax

        from scicot_jax.model import scoring

        params = self.params(checkpoint)
        data = TokenizedPairs(self.vocab, pairs, self.max_inputs, self.max_targets)
        fn = self._decoders.get("score")
        if fn is None:
            fn = self._decoders["score"] = jax.jit(lambda p, b: scoring.score(p, self.model, b))
        bs = self.cfg.eval_batch_size
        out: list[float] = []
        for s in range(0, len(data), bs):
            idx = np.arange(s, min(s + bs, len(data)))
            n = len(idx)
            idx = np.concatenate([idx, np.zeros(bs - n, np.int64)]) if n < bs else idx
            b = data.batch(idx)
            b.pop("decoder_loss_weights")
            res = fn(params, b)
            out.extend((-np.asarray(res["mean_logprob"])[:n]).tolist())
        return out
