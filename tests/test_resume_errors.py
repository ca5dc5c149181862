"""Resume safety: a checkpoint of another model is a clear error (nothing renamed or written),
only truly unreadable steps are quarantined, and a run whose every step is unreadable stops."""

from __future__ import annotations

from pathlib import Path

import pytest
from model_fixtures import enable_compile_cache, tiny_config
from test_checkpoints import _cfg as checkpoint_cfg
from train_toy import toy_batches

from scicot_jax.checkpoints.orbax import (
    CheckpointMismatchError,
    Checkpoints,
    NoReadableCheckpointError,
)
from scicot_jax.train.trainer import TrainConfig, train


@pytest.fixture(scope="module", autouse=True)
def _cache(tmp_path_factory):
    enable_compile_cache(tmp_path_factory.mktemp("jax_cache"))


def _cfg(model_dir: Path, steps: int, **model_kw) -> TrainConfig:
    return checkpoint_cfg(model_dir, steps, model=tiny_config(0.1).replace(**model_kw))


def _snapshot(model_dir: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(model_dir)): p.read_bytes()
        for p in sorted(model_dir.rglob("*"))
        if p.is_file()
    }


def _garble(step_dir: Path) -> None:
    for f in (step_dir / "params").rglob("*"):
        if f.is_file() and f.stat().st_size > 0 and "ocdbt" not in f.name:
            f.write_bytes(b"\0garbage")


@pytest.mark.slow  # trains twice (compiles a T5 step): ~30 s on 2 busy cores
def test_changed_model_on_resume_is_a_clear_error_and_changes_nothing(tmp_path):
    train(_cfg(tmp_path, 8), toy_batches())
    before = _snapshot(tmp_path)
    with pytest.raises(
        CheckpointMismatchError, match=r"checkpoint 8 .*has d_model 16, the model 32"
    ):
        train(_cfg(tmp_path, 12, d_model=32), toy_batches())
    assert _snapshot(tmp_path) == before  # nothing renamed, nothing written
    assert Checkpoints(tmp_path).all_steps() == [4, 8]


@pytest.mark.slow  # trains once (compiles a T5 step): ~30 s on 2 busy cores
def test_all_unreadable_stops_without_renaming(tmp_path):
    train(_cfg(tmp_path, 8), toy_batches())
    for s in (4, 8):
        _garble(tmp_path / "checkpoints" / str(s))
    names = sorted(p.name for p in (tmp_path / "checkpoints").iterdir())
    with pytest.raises(NoReadableCheckpointError, match=r"steps 8, 4.*unreadable"):
        train(_cfg(tmp_path, 12), toy_batches())
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == names
