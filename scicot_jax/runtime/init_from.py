"""INITIAL_CHECKPOINT_PATH: params from a trainer checkpoint, a save_params dir or HF weights."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import jax
import numpy as np

from scicot_jax.runtime import checkpoints

log = logging.getLogger(__name__)


def detect_format(path: str | Path) -> str:
    """'trainer' | 'hf' | 'params' (scicot_jax.model.checkpoint_io.save_params)."""
    p = Path(path)
    if not p.exists():
        raise FileNotFoundError(f"initial checkpoint {p} does not exist")
    if checkpoints.resolve_step_dir(p) is not None:
        return "trainer"
    if p.is_dir() and not (p / "config.json").exists() and not (p / "params").is_dir():
        raise FileNotFoundError(
            f"initial checkpoint {p}: no trainer checkpoint, save_params directory "
            "(params/, config.json) or HF export (config.json) in it"
        )
    cfg = p / "config.json"
    if cfg.exists():
        try:
            if "model_type" in json.loads(cfg.read_text()):
                return "hf"
        except json.JSONDecodeError as e:
            raise ValueError(f"{cfg}: invalid JSON ({e})") from e
    return "params"


def load_initial_params(
    path: str | Path, abstract_params: Any, shardings: Any, model_config: Any = None
) -> Any:
    """Params from `path`, placed with `shardings`, checked against the model's shapes."""
    fmt = detect_format(path)
    log.info("initial checkpoint %s (%s format)", path, fmt)
    if fmt in ("trainer", "params"):
        from scicot_jax.model.checkpoint_io import restore_tree

        base = checkpoints.resolve_step_dir(path) if fmt == "trainer" else Path(path)
        try:  # straight onto the mesh when the stored tree has the model's layout
            params = restore_tree(Path(base) / "params", shardings=shardings)
            _check_shapes(params, abstract_params, path)
            return params
        except (ValueError, TypeError, KeyError) as e:
            log.info("restoring %s on host for layout conversion (%s)", path, e)
            params = restore_tree(Path(base) / "params")
    elif fmt == "hf":
        from scicot_jax.model.hf import import_hf

        _, params = import_hf(str(path))
    params = _match_layout(params, abstract_params, model_config)
    _check_shapes(params, abstract_params, path)
    return jax.tree.map(
        lambda x, s, a: jax.device_put(np.asarray(x, a.dtype), s),
        params,
        shardings,
        abstract_params,
    )


def _match_layout(params: Any, abstract_params: Any, model_config: Any) -> Any:
    """Converts between per-layer and scanned (stacked) param trees when they differ."""
    if jax.tree.structure(params) == jax.tree.structure(abstract_params):
        return params
    if model_config is None:
        return params
    from scicot_jax.model import scan as scan_lib

    if getattr(model_config, "scan_layers", False):
        return scan_lib.scan_params(params, model_config)
    return scan_lib.unscan_params(params, model_config)


def _check_shapes(params: Any, abstract_params: Any, path: Any) -> None:
    got = jax.tree_util.tree_flatten_with_path(params)[0]
    want = dict(jax.tree_util.tree_flatten_with_path(abstract_params)[0])
    got_d = dict(got)
    missing = [jax.tree_util.keystr(k) for k in want if k not in got_d]
    if missing:
        raise ValueError(
            f"initial checkpoint {path}: missing params {missing[:5]}"
            f"{' ...' if len(missing) > 5 else ''}"
        )
    for k, a in want.items():
        if tuple(np.shape(got_d[k])) != tuple(a.shape):
            raise ValueError(
                f"initial checkpoint {path}: {jax.tree_util.keystr(k)} has shape "
                f"{tuple(np.shape(got_d[k]))}, model expects {tuple(a.shape)}"
            )
