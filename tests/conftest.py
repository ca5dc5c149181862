"""Shared fixtures. Heavy modules (seqio, tensorflow) are imported inside fixtures only."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import pytest

_TMP_ROOT: str | None = None


def pytest_configure(config: pytest.Config) -> None:
    # Hermetic: tests never read the user's rationale runs nor write to ~/.cache. Set before
    # collection because importing scicot_jax.tasks registers runs found under the root.
    global _TMP_ROOT
    _TMP_ROOT = tempfile.mkdtemp(prefix="scicot_test_")
    os.environ["SCICOT_CACHE"] = os.path.join(_TMP_ROOT, "cache")
    os.environ["SCICOT_RATIONALE_ROOT"] = os.path.join(_TMP_ROOT, "rationales")
    os.environ.pop("SCICOT_VOCAB", None)


def pytest_unconfigure(config: pytest.Config) -> None:
    if _TMP_ROOT:
        shutil.rmtree(_TMP_ROOT, ignore_errors=True)


@pytest.fixture(scope="session")
def tiny_vocab_path() -> Path:
    """The demo SentencePiece model (512 pieces, pad=0 eos=1 unk=2), trained once per session."""
    from scicot_jax.data.vocab import build_demo_vocab

    return build_demo_vocab()  # into $SCICOT_CACHE, where get_vocabulary() looks for it


@pytest.fixture(scope="session")
def tiny_vocab(tiny_vocab_path):
    """seqio.SentencePieceVocabulary over the demo model."""
    from scicot_jax.data.vocab import get_vocabulary

    return get_vocabulary(tiny_vocab_path)


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """../shared/data (real data sets); skips the test when absent."""
    path = (Path(__file__).parents[1] / "../shared/data").resolve()
    if not path.is_dir():
        pytest.skip(f"real data not available at {path}")
    return path
