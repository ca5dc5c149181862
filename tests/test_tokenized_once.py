"""Each stage's pairs are tokenized and (packed) fitted once: the budget measures the rows the
student trains on, and the baseline trains on the budget's reference rows."""

from __future__ import annotations

import pytest
from test_pipeline_flow import fake_teacher

from scicot_jax.data import packing
from scicot_jax.data.seqio_feed import DatasetConfig, train_batches
from scicot_jax.pipeline import plan, teacher_step
from scicot_jax.pipeline import run as run_mod
from scicot_jax.pipeline.config import PipelineConfig, StudentConfig
from scicot_jax.pipeline.student import T5Student
from scicot_jax.train import trainer


class CountingVocab:
    """The student's vocabulary, counting the texts it encodes."""

    def __init__(self, vocab):
        self.inner, self.encoded = vocab, 0

    def encode(self, text):
        self.encoded += 1
        return self.inner.encode(text)

    def __getattr__(self, name):
        return getattr(self.inner, name)


class QuietStudent(T5Student):
    """The T5 student's data path; training and decoding stubbed (no compile)."""

    @property
    def vocab(self):
        if not isinstance(self._vocab, CountingVocab):
            self._vocab = CountingVocab(T5Student.vocab.fget(self))
        return self._vocab

    def predict(self, checkpoint, inputs, *, stage, infer_input=None):
        return ["Therefore, the answer is A."] * len(inputs)


def test_each_stage_is_tokenized_and_fitted_once(tmp_path, monkeypatch):
    monkeypatch.setattr(teacher_step, "run", fake_teacher)
    monkeypatch.setattr(
        trainer,
        "train",
        lambda config, batches, **kw: trainer.TrainResult(
            config.train_steps, False, {}, {}, config.model_dir
        ),
    )
    built, fits = [], []
    init, fitted_rows = plan.TokenizedPairs.__init__, packing.fitted_rows

    def counting_init(self, vocab, model, pairs, *a):
        built.append(len(pairs))
        init(self, vocab, model, pairs, *a)

    monkeypatch.setattr(plan.TokenizedPairs, "__init__", counting_init)
    monkeypatch.setattr(packing, "fitted_rows", lambda *a: fits.append(1) or fitted_rows(*a))
    cfg = PipelineConfig(
        task="synthetic_mc",
        out=str(tmp_path / "run"),
        methods=("baseline", "finetune_cot:1", "scicot:1"),
        limits={"train": 24, "validation": 4, "test": 4},
        student=StudentConfig(vocab=None, steps=4, batch_size=4, pack=True, packed_row_tokens=256),
    )
    student = QuietStudent(cfg.student, task=cfg.task)
    res = run_mod.Pipeline(cfg, student, log=lambda s: None).run()
    m = res["methods"]
    stages = [24, m["finetune_cot:1"]["train_examples"], m["scicot:1"]["rationales_used"], 24]
    # baseline (the budget's reference too), Fine-tune-CoT, Sci-CoT Stage 1 and Stage 2
    assert built == stages
    assert len(fits) == len(stages)
    assert student.vocab.encoded == 2 * sum(stages)  # inputs and targets, once each


def test_seqio_feed_takes_fitted_lengths_only():
    """Fitting packed lengths reads the whole split: the feed refuses an unfitted config instead
    of fitting again (the binary and the plan fit once and pass the fitted config on)."""
    cfg = DatasetConfig("scicot:any", {"inputs": 8, "targets": 4}, packed_row_tokens=64)
    with pytest.raises(ValueError, match=r"packed_row_tokens=64: fit the lengths first"):
        train_batches(cfg)
