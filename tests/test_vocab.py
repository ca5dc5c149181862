"""Vocabularies: the tiny demo SentencePiece model and path resolution."""

import pytest

from scicot_jax.data import vocab


def test_demo_vocab_ids_and_roundtrip(tiny_vocab):
    assert (tiny_vocab.pad_id, tiny_vocab.eos_id, tiny_vocab.unk_id) == (0, 1, 2)
    assert tiny_vocab.bos_id == -1
    assert 256 <= tiny_vocab.vocab_size <= vocab.DEMO_VOCAB_SIZE
    text = "Mia has 24 apples. 24 + 2 = 26. Therefore, the answer is C. --> C"
    ids = tiny_vocab.encode(text)
    assert 0 not in ids and 1 not in ids and 2 not in ids
    assert tiny_vocab.decode(ids) == text
    assert len(ids) < len(text) / 1.5  # pieces, not characters


def test_train_tiny_spm_deterministic_and_cached(tmp_path):
    texts = [f"The coin is flipped {i} times by Ann and Bob." for i in range(300)]
    a = vocab.train_tiny_spm(tmp_path / "a", texts, 64)
    b = vocab.train_tiny_spm(tmp_path / "b", texts, 64)
    assert a.name == b.name and a.read_bytes() == b.read_bytes()
    assert vocab.train_tiny_spm(tmp_path / "a", texts, 64) == a  # cache hit
    with pytest.raises(ValueError, match="no non-empty texts"):
        vocab.train_tiny_spm(tmp_path, ["", "  "], 64)


def test_get_vocabulary_resolution(tiny_vocab_path, monkeypatch, tmp_path):
    t5 = vocab.get_vocabulary("t5")  # lazy: nothing is downloaded
    assert t5.sentencepiece_model_file == vocab.T5_VOCAB_PATH and t5.extra_ids == 0
    demo = vocab.get_vocabulary()
    assert isinstance(demo, vocab.DemoVocabulary)
    assert demo.sentencepiece_model_file == str(tiny_vocab_path)
    monkeypatch.setenv(vocab.VOCAB_ENV, str(tiny_vocab_path))
    assert vocab.get_vocabulary().sentencepiece_model_file == str(tiny_vocab_path)
    with pytest.raises(FileNotFoundError, match="nope.model"):
        vocab.get_vocabulary(tmp_path / "nope.model")


def test_demo_vocabulary_builds_lazily(tmp_path, tiny_vocab_path):
    target = vocab.demo_vocab_path(tmp_path)
    lazy = vocab.DemoVocabulary(str(target))
    assert not target.exists()
    assert lazy.encode("heads up") and target.read_bytes() == tiny_vocab_path.read_bytes()


def test_t5_vocabulary_is_what_t5x_t5_1_1_gin_builds(tiny_vocab_path):
    """Our "t5" vocabulary equals the one gin/t5x/models/*.gin (t5x's t5_1_1 lines) builds.

    Same file and extra ids; equality itself (seqio compares the model bytes) is checked with
    the file swapped for a local one on both sides, since gs:// is not reachable in tests.
    """
    import re

    import seqio

    import gin

    built_by_gin = gin.external_configurable(seqio.SentencePieceVocabulary, module="seqio")
    for size in ("small", "base", "large", "xl"):
        text = (vocab.Path(__file__).parents[1] / f"gin/t5x/models/{size}.gin").read_text()
        lines = [ln for ln in text.splitlines() if ln.startswith("seqio.SentencePieceVocabulary")]
        gin.clear_config()
        gin.parse_config(lines)
        built = built_by_gin()
        ours = vocab.get_vocabulary("t5")
        assert built.sentencepiece_model_file == ours.sentencepiece_model_file
        assert built.extra_ids == ours.extra_ids == 0
        assert re.search(r"extra_ids = 0\b", text)
        gin.parse_config(
            [f"seqio.SentencePieceVocabulary.sentencepiece_model_file = '{tiny_vocab_path}'"]
        )
        assert built_by_gin() == vocab.get_vocabulary(tiny_vocab_path)
        assert built_by_gin().vocab_size == vocab.get_vocabulary(tiny_vocab_path).vocab_size
        gin.clear_config()
