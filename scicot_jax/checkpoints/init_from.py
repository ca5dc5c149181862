"""Checkpoints users point at (INITIAL_CHECKPOINT_PATH, CHECKPOINT_PATH): detect, then load.

Formats: our trainer's model/step dirs, save_params dirs, Hugging Face dirs, and t5x's
checkpoints (legacy msgpack + tensorstore, or orbax), each local or on gs://.
"""

from __future__ import annotations

import json
import logging
from typing import Any

import jax
import numpy as np

from scicot_jax.checkpoints import orbax, t5x
from scicot_jax.checkpoints.hf import config_from_hf, import_hf
from scicot_jax.checkpoints.params_io import read_config, restore_tree
from scicot_jax.model import scan as scan_lib
from scicot_jax.model.config import T5Config
from scicot_jax.paths import PathLike, as_path

log = logging.getLogger(__name__)

FORMATS = ("trainer", "params", "hf", t5x.LEGACY, t5x.ORBAX)


def detect_format(path: PathLike) -> str:
    """One of FORMATS, from what is in `path`; anything else is one error naming what was found."""
    p = as_path(path)
    if not p.exists():
        raise FileNotFoundError(f"checkpoint {p} does not exist")
    if orbax.resolve_step_dir(p) is not None:
        return "trainer"
    found = t5x.find(p)
    if found is not None:
        return found[0]
    cfg = p / "config.json"
    if cfg.exists():
        try:
            if "model_type" in json.loads(cfg.read_text()):
                return "hf"
        except json.JSONDecodeError as e:
            raise ValueError(f"{cfg}: invalid JSON ({e})") from e
        if (p / "params").is_dir():
            return "params"
    listing = sorted(c.name for c in p.iterdir())[:12] if p.is_dir() else "a file"
    raise ValueError(
        f"{p}: not a checkpoint in any known format (trainer model or step dir, save_params "
        f"dir with config.json + params/, Hugging Face dir, t5x checkpoint_<step> with a "
        f"`checkpoint` file or `state/`); found {listing or 'an empty directory'}"
    )


def checkpoint_config(path: PathLike) -> T5Config:
    """The T5Config stored with a checkpoint (trainer meta, save_params or HF config.json)."""
    fmt = detect_format(path)
    if fmt == "trainer":
        step_dir = orbax.resolve_step_dir(path)
        model = orbax.read_meta(step_dir).get("model")
        if not model:
            raise ValueError(f"{step_dir}: checkpoint meta has no model config; pass a model")
        return T5Config.from_dict(model, source=f"{step_dir}/meta")
    if fmt == "hf":
        cfg_file = as_path(path) / "config.json"
        return config_from_hf(json.loads(cfg_file.read_text()), cfg_file)
    if fmt in (t5x.LEGACY, t5x.ORBAX):  # t5x stores no config
        return t5x.config_from_shapes(t5x.read_shapes(path))
    return read_config(path)


def load_initial_params(
    path: PathLike, abstract_params: Any, shardings: Any, model_config: T5Config | None = None
) -> Any:
    """Params from `path`, placed with `shardings`, checked against the model's shapes."""
    return load_initial(path, abstract_params, shardings, model_config, optimizer=False)[0]


def load_initial(
    path: PathLike,
    abstract_params: Any,
    shardings: Any,
    model_config: T5Config | None = None,
    *,
    optimizer: bool = True,
) -> tuple[Any, int | None, Any]:
    """(params on `shardings`, stored step or None, t5x param_states or None) from `path`;
    t5x's optimizer arrays are read only when `optimizer`."""
    fmt = detect_format(path)
    log.info("checkpoint %s (%s format)", path, fmt)
    step, param_states = None, None
    if fmt in ("trainer", "params"):
        base = orbax.resolve_step_dir(path) if fmt == "trainer" else as_path(path)
        if fmt == "trainer":
            step = orbax.read_meta(base).get("step")
        try:  # straight onto the mesh when the stored tree has the model's layout
            params = restore_tree(base / "params", shardings=shardings)
            _check_shapes(params, abstract_params, path)
            return params, step, None
        except (ValueError, TypeError, KeyError) as e:
            log.info("restoring %s on host for layout conversion (%s)", path, e)
            params = restore_tree(base / "params")
    elif fmt == "hf":
        _, params = import_hf(str(path))
    else:
        state = t5x.read(path, optimizer=optimizer)
        params, step, param_states = state.params, state.step, state.param_states
    params = _match_layout(params, abstract_params, model_config)
    _check_shapes(params, abstract_params, path)
    params = jax.tree.map(
        lambda x, s, a: jax.device_put(np.asarray(x, a.dtype), s),
        params,
        shardings,
        abstract_params,
    )
    return params, step, param_states


def _match_layout(params: Any, abstract_params: Any, model_config: T5Config | None) -> Any:
    """Converts between per-layer and scanned (stacked) param trees when they differ."""
    if jax.tree.structure(params) == jax.tree.structure(abstract_params):
        return params
    if model_config is None:
        return params
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
