"""SentencePiece vocabularies: T5's for real runs, a tiny one trained on synthetic text for tests/demo.

Ids follow T5: pad=0, eos=1, unk=2, no bos. The demo vocabulary is trained deterministically
(one thread, no sampling) from the synthetic tasks' questions, rationales and answers, cached on
disk, and built lazily the first time a tokenizer is needed.
"""

from __future__ import annotations

import hashlib
import io
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import seqio

from scicot_jax.files import atomic_write
from scicot_jax.paths import as_path, is_url

T5_VOCAB_PATH = "gs://t5-data/vocabs/cc_all.32000.100extra/sentencepiece.model"
# t5x's t5_1_1 gin uses this file with extra_ids=0: the "100extra" file already holds the 100
# sentinels, so it has 32,100 ids (the 32,128-row embedding rounds that up for TPUs).
T5_EXTRA_IDS = 0
DEMO_VOCAB_SIZE = 512
# Bump when the demo corpus or trainer options change, so stale cached models are not reused.
DEMO_VOCAB_VERSION = 1
VOCAB_ENV = "SCICOT_VOCAB"
CACHE_ENV = "SCICOT_CACHE"

# T5 conventions (pad=0, eos=1, unk=2, no bos); single-threaded and unshuffled so a model is
# deterministic.
SPM_OPTIONS = dict(
    pad_id=0,
    eos_id=1,
    unk_id=2,
    bos_id=-1,
    character_coverage=1.0,
    hard_vocab_limit=False,  # a small corpus may not support the requested size
    num_threads=1,  # determinism
    shuffle_input_sentence=False,
    input_sentence_size=0,
    minloglevel=2,
)
_TRAINER_OPTIONS = dict(
    SPM_OPTIONS,
    model_type="unigram",
    split_digits=True,  # one token per digit: tiny students learn arithmetic far more easily
)


def cache_dir() -> Path:
    """Where cached vocabularies live ($SCICOT_CACHE/vocab, default ~/.cache/scicot_jax/vocab)."""
    root = os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "scicot_jax"
    return Path(root) / "vocab"


def train_tiny_spm(
    out_dir: str | os.PathLike[str],
    texts: Iterable[str],
    vocab_size: int = DEMO_VOCAB_SIZE,
    *,
    name: str | None = None,
) -> Path:
    """Train (or reuse) a unigram SentencePiece model on `texts`; returns the .model path.

    Without `name`, the file name carries a hash of the texts and options, so the same inputs
    reuse the cached model and different inputs never collide.
    """
    corpus = [t.replace("\n", " ").strip() for t in texts]
    corpus = [t for t in corpus if t]
    if not corpus:
        raise ValueError("train_tiny_spm: no non-empty texts to train on")
    if name is None:
        h = hashlib.sha256(repr(sorted(_TRAINER_OPTIONS.items())).encode())
        h.update(str(vocab_size).encode())
        for t in corpus:
            h.update(t.encode() + b"\n")
        name = f"spm_{vocab_size}_{h.hexdigest()[:12]}"
    out_dir = Path(out_dir)
    path = out_dir / f"{name}.model"
    if path.exists():
        return path
    # Atomic so concurrent test workers never read a half-written model.
    return atomic_write(path, train_spm(corpus, vocab_size, **_TRAINER_OPTIONS))


def train_spm(texts: Iterable[str], vocab_size: int, **options: Any) -> bytes:
    """A SentencePiece model (serialized) trained in memory on ``texts``; ``options`` are the
    trainer's (model_type, split_digits, and SPM_OPTIONS for T5's special ids)."""
    import sentencepiece as spm

    model = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(texts),
        model_writer=model,
        vocab_size=vocab_size,
        max_sentence_length=1 << 14,
        **options,
    )
    return model.getvalue()


def demo_corpus(n_per_task: int = 200, variants: int = 2) -> list[str]:
    """Questions, rendered student inputs/targets, rationales and answers of the synthetic tasks."""
    from scicot_jax.data import formats, synthetic

    texts: list[str] = []
    for task in sorted(synthetic.SYNTHETIC_TASKS):
        for split in ("train", "validation"):
            for ex in synthetic.generate(task, split, n=n_per_task, seed=0):
                rationales = [synthetic.write_rationale(task, ex, v) for v in range(variants)]
                texts.extend(formats.baseline(ex))
                texts.extend(formats.one_stage(ex, rationales[0]))
                texts.extend(formats.stage2(ex, rationales[0]))
                texts.extend(rationales[1:])
    return texts


def demo_vocab_path(out_dir: str | os.PathLike[str] | None = None) -> Path:
    """Path of the demo vocabulary's model file (not necessarily built yet)."""
    root = Path(out_dir) if out_dir is not None else cache_dir()
    return root / f"demo_v{DEMO_VOCAB_VERSION}_{DEMO_VOCAB_SIZE}.model"


def build_demo_vocab(out_dir: str | os.PathLike[str] | None = None) -> Path:
    """Train the demo vocabulary from the synthetic tasks if not cached; returns its path."""
    path = demo_vocab_path(out_dir)
    if not path.exists():
        train_tiny_spm(path.parent, demo_corpus(), DEMO_VOCAB_SIZE, name=path.stem)
    return path


class DemoVocabulary(seqio.SentencePieceVocabulary):
    """The demo vocabulary; its model file is trained on first use, so importing stays cheap."""

    def _model_context(self):
        if self._model is None and not os.path.exists(self.sentencepiece_model_file):
            build_demo_vocab(Path(self.sentencepiece_model_file).parent)
        return super()._model_context()


def get_vocabulary(
    path_or_none: str | os.PathLike[str] | None = None, *, extra_ids: int | None = None
) -> seqio.SentencePieceVocabulary:
    """A SentencePiece vocabulary from a path (local or gs://), "t5", "demo", or $SCICOT_VOCAB.

    None reads $SCICOT_VOCAB and falls back to the demo vocabulary. "t5" is T5's
    cc_all.32000.100extra model with t5x's extra_ids=0 (32,100 ids). Nothing is downloaded or
    trained until the vocabulary is first used.
    """
    spec = os.fspath(path_or_none) if path_or_none is not None else os.environ.get(VOCAB_ENV)
    if not spec or spec == "demo":
        return DemoVocabulary(str(demo_vocab_path()), extra_ids=extra_ids or 0)
    if spec == "t5" or spec == T5_VOCAB_PATH:
        return UrlVocabulary(
            T5_VOCAB_PATH, extra_ids=T5_EXTRA_IDS if extra_ids is None else extra_ids
        )
    if is_url(spec):
        return UrlVocabulary(spec, extra_ids=extra_ids or 0)
    if not Path(spec).is_file():
        raise FileNotFoundError(f"SentencePiece model not found: {spec}")
    return seqio.SentencePieceVocabulary(spec, extra_ids=extra_ids or 0)


class UrlVocabulary(seqio.SentencePieceVocabulary):
    """A SentencePiece model on gs://, copied to the cache through the path layer on first use.

    seqio reads model files with TensorFlow's GCS client, which ignores the endpoint and
    credentials the rest of the run (gcsfs, tensorstore) uses.
    """

    def _model_context(self):
        if self._model is None and is_url(self._sentencepiece_model_file):
            self._sentencepiece_model_file = str(stage_local(self._sentencepiece_model_file))
        return super()._model_context()


def stage_local(url: str) -> Path:
    """A local copy of a gs:// file under the cache (fetched once, written atomically)."""
    local = cache_dir() / "gs" / url[len("gs://") :]
    if not local.exists():
        data = as_path(url).read_bytes()
        local.parent.mkdir(parents=True, exist_ok=True)
        tmp = local.with_name(f".{local.name}.tmp")
        tmp.write_bytes(data)
        os.replace(tmp, local)
    return local
