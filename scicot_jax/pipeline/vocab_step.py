"""A task vocabulary: a small BPE SentencePiece model trained on the run's own texts.

For students trained from scratch on one task, a vocabulary fitted to that task's words keeps
sequences short (whole words instead of characters), which is most of the cost on a CPU. It
is trained on the train split only: rendered questions in every student format and the
teacher's rationales, so the separators of the formats are covered.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path

from scicot_jax.data import formats
from scicot_jax.data.examples import Example
from scicot_jax.data.vocab import SPM_OPTIONS, train_spm
from scicot_jax.files import atomic_write


def corpus(examples: Sequence[Example], rationales: Iterable[str]) -> list[str]:
    """Texts the vocabulary is fitted on."""
    rationales = [r for r in rationales if r.strip()]
    texts = []
    for i, ex in enumerate(examples):
        r = rationales[i % len(rationales)] if rationales else "step"
        texts.extend(formats.baseline(ex))
        texts.extend(formats.one_stage(ex, r))
        texts.append(formats.stage2(ex, r)[0])
    texts.extend(rationales)
    return [" ".join(t.split()) for t in texts if t.strip()]


def train(out_dir: Path, texts: Sequence[str], vocab_size: int, split_digits: bool = False) -> Path:
    """Train the model into ``out_dir/task.model`` (atomic write); returns its path.

    split_digits=False keeps frequent numbers whole (one token each: shorter sequences, and a
    number is copied in one step); True spells every number digit by digit."""
    if not texts:
        raise ValueError("task vocabulary: no texts to train on")
    options = dict(SPM_OPTIONS, model_type="bpe", split_digits=split_digits)
    return atomic_write(out_dir / "task.model", train_spm(texts, vocab_size, **options))
