"""The pipeline's T5 student: trains through ``pipeline.plan``, decodes, scores.

Texts are tokenized with the run's SentencePiece vocabulary and padded to fixed lengths (the
longest example rounded up to a multiple of 8, capped by the card's feature lengths), so each
stage compiles once. ``--student.trainer inprocess`` trains on those in-memory token pairs;
``--student.trainer gin`` trains on the SeqIO task registered from the same pairs through the train
binary's ``run`` (SeqIO tokenization, config.gin), as a t5x run would, at the same lengths and in
the same epoch order: both give the same batches, losses and parameters. Decoding and scoring
use the checkpoint's own model config.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from scicot_jax.data.tokens import with_eos
from scicot_jax.files import atomic_write
from scicot_jax.pipeline import plan
from scicot_jax.pipeline.config import StudentConfig

log = logging.getLogger(__name__)

STUDENT_FILE = "student.json"  # written next to the checkpoints: lengths the student saw


class T5Student:
    """Student trainer/decoder/scorer over the library API (see ``pipeline.run.Student``)."""

    def __init__(
        self, cfg: StudentConfig, card: Any = None, task: str | None = None, seed: int = 0
    ):
        self.cfg = cfg
        self.seed = seed  # the run's (PipelineConfig.seed)
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
        """T5Config of the students trained here (``plan.model_config``)."""
        if self._model is None:
            self._model = plan.model_config(self.cfg, self.vocab.vocab_size)
        return self._model

    # ------------------------------------------------------------------ training
    def prepare(self, pairs: Sequence[tuple[str, str]]) -> plan.TokenizedPairs | plan.PackedPairs:
        """(inputs, targets) texts as batch rows: tokenized once, padded to their own lengths
        (capped by the card's), packed into lengths fitted to them when the student packs."""
        data = plan.TokenizedPairs(self.vocab, self.model, pairs, self.max_inputs, self.max_targets)
        if data.truncated:
            log.warning(
                "%d texts truncated to %d/%d tokens",
                data.truncated,
                self.max_inputs,
                self.max_targets,
            )
        return plan.batch_rows(self.cfg, data)

    def train(
        self,
        data: Sequence[tuple[str, str]] | plan.TokenizedPairs | plan.PackedPairs,
        out_dir: Path,
        *,
        stage: str,
        task: Callable[[str | None], str] | None = None,
        steps: int | None = None,
    ) -> dict:
        """Train a fresh student on ``data`` (texts, or the rows ``prepare`` made of them) into
        ``out_dir`` for ``steps`` (default: the stage's configured steps); resumes from its
        checkpoints. ``task(vocab)`` registers the same data as a SeqIO task and names it (the
        data source of ``--student.trainer gin``)."""
        model = self.model
        # Tokenized once; the lengths (packed: fitted) are planned once and both trainers
        # read them, in the same epoch order (data.epochs).
        if not isinstance(data, plan.TokenizedPairs | plan.PackedPairs):
            data = self.prepare(data)
        extra: dict[str, Any] = {"truncated": data.truncated}
        if self.cfg.trainer == "gin":
            if task is None:
                raise ValueError(f"{stage}: the gin trainer needs the data as a SeqIO task")
            extra["task"] = task(self.vocab_spec)
            p = plan.build(self.cfg, model, out_dir, stage, data, steps, extra["task"], self.seed)
            res = plan.train_with_gin(p)
        else:
            p = plan.build(self.cfg, model, out_dir, stage, data, steps, seed=self.seed)
            res = plan.train_in_process(p)
            if res.state is not None:
                self._params[str(out_dir)] = res.state.params
        # lengths of one example, not of a packed row: decoding reads them
        lengths = (data.tokenized if isinstance(data, plan.PackedPairs) else data).lengths
        per_row = data.tokens_per_example * data.examples_per_row  # packed or not
        self._configs[str(out_dir)] = model
        # every host of a pod writes the same file: atomically, so none reads half of it
        atomic_write(out_dir / STUDENT_FILE, json.dumps({"lengths": lengths, "stage": stage}))
        return {
            "checkpoint": str(out_dir),
            "steps": res.step,
            "train_tokens": int(res.step * p.batch_size * per_row),
            "train_flops": self.train_flops(res.step, p.train.feature_lengths),
            "final_loss": res.metrics.get("loss"),  # the objective (per token, plus z-loss)
            "final_loss_per_token": res.metrics.get("cross_ent_loss"),
            "final_token_accuracy": res.metrics.get("accuracy"),  # not the task's accuracy %
            "lengths": lengths,
            **extra,
        }

    def train_flops(self, steps: int, lengths: dict[str, int]) -> int:
        """Training FLOPs of ``steps`` batches at the padded ``lengths`` (forward + backward)."""
        from scicot_jax.model.flops import flops_per_example

        per = flops_per_example(self.model, lengths["inputs"], lengths["targets"])
        return int(steps * self.cfg.batch_size * per)

    def params(self, checkpoint: str) -> Any:
        """Params of a trainer model dir or any initial checkpoint (HF, orbax), cached."""
        if checkpoint not in self._params:
            from scicot_jax.runtime import inference

            model = self.model_for(checkpoint)
            _, self._params[checkpoint] = inference.load_model(checkpoint, model, self.mesh)
        return self._params[checkpoint]

    def model_for(self, checkpoint: str) -> Any:
        """The T5Config to decode ``checkpoint`` with: its own, in the student's dtype."""
        if checkpoint not in self._configs:
            from scicot_jax.runtime import inference

            own = inference.checkpoint_config(checkpoint)
            self._configs[checkpoint] = own.replace(dtype=plan.activation_dtype(self.cfg))
        return self._configs[checkpoint]

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
        return rows, min(limit, plan.round_up(max((len(r) for r in rows), default=1), 64))

    def predict(
        self,
        checkpoint: str,
        inputs: Sequence[str],
        *,
        stage: str,
        infer_input: Path | None = None,
    ) -> list[str]:
        """Greedy decodes through the infer binary's t5x files (``pipeline.infer_files``):
        ``infer_input`` (default ``<checkpoint>/infer/<stage>.jsonl``) gets the texts, and
        predictions come from infer's output files beside it. A complete set already there
        (e.g. from a user's infer jobs on a pod) is read as it is; else infer runs here, on
        every process of a pod, each host decoding its shard."""
        if not inputs:
            return []
        from scicot_jax import infer
        from scicot_jax.pipeline import infer_files
        from scicot_jax.runtime import multihost

        path = Path(infer_input or Path(checkpoint) / "infer" / f"{stage}.jsonl")
        infer_files.write_inputs(path, inputs)
        outs = infer_files.read_predictions(path, inputs)
        if not all(multihost.allgather_objects(outs is not None)):  # every host, or none, runs
            _, length = self._tokens(inputs, self.max_inputs)
            log.info("predict %s: %d inputs through infer -> %s", stage, len(inputs), path.parent)
            infer.run(
                checkpoint_path=checkpoint,
                output_dir=str(path.parent),
                input_file=str(path),
                vocabulary=self._vocab_spec,
                model=self.model_for(checkpoint),
                task_feature_lengths={"inputs": length, "targets": self.decode_length(checkpoint)},
                batch_size=self.cfg.eval_batch_size,
            )
            outs = infer_files.read_predictions(path, inputs)
            if outs is None:
                raise RuntimeError(f"{path.parent}: infer wrote no complete predictions for {path}")
        return outs

    def score(self, checkpoint: str, pairs: Sequence[tuple[str, str]]) -> list[float]:
        """Mean token NLL of each target given its input (the RD of MoRSD for stage-2 pairs);
        on a pod each host scores its shard of the pairs."""
        if not pairs:
            return []
        from scicot_jax.runtime import inference, multihost
        from scicot_jax.runtime import partitioning as part

        host, hosts = part.host_shard(self.mesh)
        enc, enc_len = self._tokens([i for i, _ in pairs[host::hosts]], self.max_inputs)
        tgt, tgt_len = self._tokens([t for _, t in pairs[host::hosts]], self.max_targets)
        # every host pads to the same lengths (one compiled shape)
        enc_len, tgt_len = (max(x) for x in zip(*multihost.allgather_objects([enc_len, tgt_len])))
        res = inference.score(
            self.params(checkpoint),
            self.model_for(checkpoint),
            self.mesh,
            enc,
            tgt,
            input_length=enc_len,
            target_length=tgt_len,
            batch_size=self.cfg.eval_batch_size,
            progress="score",
            vocab_size=self.vocab.vocab_size,
        )
        return multihost.gather_shards([-r["mean_logprob"] for r in res], host, hosts)
