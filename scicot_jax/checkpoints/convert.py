"""Checkpoint conversion between our formats, t5x's and Hugging Face's (tools/convert_checkpoint.py).

Every source format init_from detects is accepted; t5x outputs use t5x's legacy layout, which
every t5x version (eval, infer, train's INITIAL_CHECKPOINT_PATH) reads.
"""

from __future__ import annotations

import dataclasses
import logging

from scicot_jax.checkpoints import orbax, params_io, t5x, t5x_adafactor
from scicot_jax.checkpoints.hf import import_hf
from scicot_jax.checkpoints.init_from import checkpoint_config, detect_format
from scicot_jax.model import logical_axes
from scicot_jax.model.config import T5Config
from scicot_jax.model.scan import unscan_params
from scicot_jax.paths import Path, PathLike, as_path

log = logging.getLogger(__name__)


@dataclasses.dataclass
class Loaded:
    """A checkpoint's model config and params (numpy/host), step and t5x optimizer state."""

    config: T5Config
    params: dict
    step: int = 0
    param_states: dict | None = None


def load_any(path: PathLike, *, optimizer: bool = False) -> Loaded:
    """Config and params (and, when asked, step and t5x-shaped optimizer state) of any format."""
    fmt = detect_format(path)
    config = checkpoint_config(path)
    if fmt in (t5x.LEGACY, t5x.ORBAX):
        state = t5x.read(path, optimizer=optimizer)
        return Loaded(config, state.params, state.step or 0, state.param_states)
    if fmt == "hf":
        return Loaded(config, import_hf(str(path))[1])
    if fmt == "params":
        return Loaded(config, params_io.load_params(path)[1])
    step_dir = orbax.resolve_step_dir(path)
    params = params_io.restore_tree(step_dir / "params")
    step = int(orbax.read_meta(step_dir).get("step", 0))
    param_states = None
    if optimizer:  # scanned layers' state is split per layer, as t5x keeps it
        raw = params_io.restore_tree(step_dir / "opt_state")
        param_states = t5x_adafactor.to_t5x(
            t5x_adafactor.optax_structure(raw), params, logical_axes(config)
        )
    return Loaded(config, params, step, param_states)


def to_orbax(src: PathLike, dst: PathLike, *, force: bool = False) -> Loaded:
    """Any checkpoint -> a save_params directory (INITIAL_CHECKPOINT_PATH / CHECKPOINT_PATH)."""
    loaded = load_any(src)
    params_io.save_params(dst, _unscanned(loaded), loaded.config, force=force)
    return loaded


def to_t5x(src: PathLike, dst: PathLike, *, dtype: str | None = None) -> Path:
    """Any checkpoint -> t5x's legacy layout; returns the `checkpoint_<step>` dir written.

    `dst` is that directory, or a model dir that gets `checkpoint_<step>` inside. Adafactor
    state of a trainer checkpoint goes along as t5x `param_states`, so t5x can resume it.
    """
    import numpy as np

    loaded = load_any(src, optimizer=True)
    out = as_path(dst)
    if not out.name.startswith(t5x.STEP_PREFIX):
        out = out / f"{t5x.STEP_PREFIX}{loaded.step}"
    return t5x.write_legacy(
        out,
        _unscanned(loaded),
        loaded.step,
        loaded.param_states,
        dtype=np.dtype(dtype) if dtype else None,
    )


def _unscanned(loaded: Loaded) -> dict:
    """Per-layer params (t5x's and HF's layout) whatever layout the source was trained in."""
    if "layers" in loaded.params.get("encoder", {}):
        return unscan_params(dict(loaded.params), loaded.config)
    return loaded.params
