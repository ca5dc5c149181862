"""Shared fixtures. Heavy modules (seqio, tensorflow) are imported inside fixtures only."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import pytest

_TMP_ROOT: str | None = None


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "slow: takes half a minute or more on CPU (`make test-fast` skips it)"
    )
    config.addinivalue_line(
        "markers",
        "long: a quarter of an hour or more on 2 cores (`make test` skips it; `make test-long`)",
    )
    # Hermetic: tests never read the user's rationale runs nor write to ~/.cache. Set before
    # collection because importing scicot_jax.tasks registers runs found under the root.
    global _TMP_ROOT
    _TMP_ROOT = tempfile.mkdtemp(prefix="scicot_test_")
    os.environ["SCICOT_CACHE"] = os.path.join(_TMP_ROOT, "cache")
    os.environ["SCICOT_RATIONALE_ROOT"] = os.path.join(_TMP_ROOT, "rationales")
    os.environ.pop("SCICOT_VOCAB", None)
    _share_compiled_programs()


def _share_compiled_programs() -> None:
    """One persistent XLA cache for the session: the binaries and pod processes the tests start
    compile the same tiny programs again and again (a pipeline's probes and stages, a resumed
    run). Set once by the first process; xdist workers and their children inherit it. A size
    limit turns on JAX's file lock, so concurrent processes never read a half-written entry."""
    if "JAX_COMPILATION_CACHE_DIR" in os.environ:
        return
    os.environ["JAX_COMPILATION_CACHE_DIR"] = os.path.join(_TMP_ROOT, "jax_cache")
    os.environ["JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"] = "0"
    os.environ["JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES"] = "0"
    os.environ["JAX_COMPILATION_CACHE_MAX_SIZE"] = str(8 << 30)


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


# The real data sets, in one place: $SCICOT_SHARED_DATA, else ../shared/data beside the checkout
# (where the task cards' data_dir entries point).
SHARED_DATA = Path(
    os.environ.get("SCICOT_SHARED_DATA") or Path(__file__).parents[1] / "../shared/data"
).resolve()


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The real data sets; a test that needs them FAILS when they are missing (CI has them)."""
    if not SHARED_DATA.is_dir():
        pytest.fail(
            f"real data not found at {SHARED_DATA}: set SCICOT_SHARED_DATA to the folder "
            "holding arc/, finetune_cot/, distill_step_by_step/ and svamp_multi_cot/",
            pytrace=False,
        )
    return SHARED_DATA


@pytest.fixture(scope="session")
def gcs_bucket():
    """`gs://<bucket>` on a GCS emulator started on a free loopback port for the session."""
    from gcs_emulator import gcs_emulator

    with gcs_emulator() as url:
        yield url
