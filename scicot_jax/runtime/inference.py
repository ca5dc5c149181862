"""Batched, data-sharded prediction and scoring over token lists (shared by infer and eval)."""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import jax
import numpy as np

from scicot_jax.runtime import checkpoints
from scicot_jax.runtime import partitioning as part
from scicot_jax.runtime.init_from import detect_format, load_initial_params

log = logging.getLogger(__name__)


def checkpoint_config(path: str | Path) -> Any:
    """The T5Config stored with a checkpoint (trainer meta, save_params or HF config.json)."""
    from scicot_jax.model import T5Config

    fmt = detect_format(path)
    if fmt == "trainer":
        step_dir = checkpoints.resolve_step_dir(path)
        model = checkpoints.read_meta(step_dir).get("model")
        if not model:
            raise ValueError(f"{step_dir}: checkpoint meta has no model config; pass a model")
        return T5Config.from_dict(model, source=f"{step_dir}/meta")
    if fmt == "hf":
        from scicot_jax.model.hf import config_from_hf

        cfg_file = Path(path) / "config.json"
        return config_from_hf(json.loads(cfg_file.read_text()), cfg_file)
    from scicot_jax.model.checkpoint_io import read_config

    return read_config(path)


def load_model(path: str | Path, model: Any = None, mesh: Any = None) -> tuple[Any, Any]:
    """(config, params sharded on mesh); `model` overrides the checkpoint's own config."""
    from scicot_jax.model import logical_axes, param_shapes

    config = model if model is not None else checkpoint_config(path)
    mesh = mesh or part.make_mesh()
    abstract = param_shapes(config)
    shardings = part.params_shardings(logical_axes(config), abstract, mesh)
    params = load_initial_params(path, abstract, shardings, config)
    return config, params


def pad_tokens(rows: Sequence[Sequence[int]], length: int) -> np.ndarray:
    """Right-pads (and truncates) token lists to [N, length] int32."""
    out = np.zeros((len(rows), length), np.int32)
    for i, r in enumerate(rows):
        r = list(r)[:length]
        out[i, : len(r)] = r
    return out


def _batches(n: int, batch_size: int):
    for start in range(0, n, batch_size):
        yield start, min(start + batch_size, n)


def predict(
    params: Any,
    config: Any,
    mesh: Any,
    inputs: Sequence[Sequence[int]],
    *,
    input_length: int,
    max_decode_length: int,
    batch_size: int = 32,
    method: str = "greedy",
    num_decodes: int = 1,
    temperature: float = 1.0,
    top_k: int = 0,
    top_p: float = 1.0,
    alpha: float = 0.6,
    seed: int = 0,
) -> list[tuple[list[list[int]], list[float]]]:
    """Per input: (num_decodes token lists cut at EOS, scores), best first for beam."""
    from scicot_jax.model.decoding import generate

    data_sh = part.batch_sharding(mesh)
    batch_size = _fit_batch(batch_size, mesh)
    out: list[tuple[list[list[int]], list[float]]] = []
    for i, (a, b) in enumerate(_batches(len(inputs), batch_size)):
        enc = pad_tokens(list(inputs[a:b]) + [[]] * (batch_size - (b - a)), input_length)
        enc_g = jax.device_put(enc, data_sh)
        toks, scores = generate(
            params,
            config,
            enc_g,
            max_decode_length=max_decode_length,
            method=method,
            num_decodes=num_decodes,
            temperature=temperature,
            top_k=top_k,
            top_p=top_p,
            alpha=alpha,
            rng=jax.random.fold_in(jax.random.key(seed), i),
        )
        toks, scores = np.asarray(jax.device_get(toks)), np.asarray(jax.device_get(scores))
        for j in range(b - a):
            out.append(([_cut(t, config.eos_id) for t in toks[j]], [float(s) for s in scores[j]]))
    return out


def score(
    params: Any,
    config: Any,
    mesh: Any,
    inputs: Sequence[Sequence[int]],
    targets: Sequence[Sequence[int]],
    *,
    input_length: int,
    target_length: int,
    batch_size: int = 32,
) -> list[dict[str, float]]:
    """Per example: sum/mean log-probability of the target tokens and their count."""
    from scicot_jax.model.scoring import score as score_fn

    data_sh = part.batch_sharding(mesh)
    batch_size = _fit_batch(batch_size, mesh)
    out: list[dict[str, float]] = []
    for a, b in _batches(len(inputs), batch_size):
        pad = [[]] * (batch_size - (b - a))
        enc = pad_tokens(list(inputs[a:b]) + pad, input_length)
        tgt = pad_tokens(list(targets[a:b]) + pad, target_length)
        dec_in = np.concatenate([np.zeros_like(tgt[:, :1]), tgt[:, :-1]], axis=1)
        batch = {
            k: jax.device_put(v, data_sh)
            for k, v in (
                ("encoder_input_tokens", enc),
                ("decoder_input_tokens", dec_in),
                ("decoder_target_tokens", tgt),
            )
        }
        res = {k: np.asarray(jax.device_get(v)) for k, v in score_fn(params, config, batch).items()}
        for j in range(b - a):
            out.append(
                {
                    "sum_logprob": float(res["sum_logprob"][j]),
                    "mean_logprob": float(res["mean_logprob"][j]),
                    "num_tokens": int(res["num_tokens"][j]),
                }
            )
    return out


def _fit_batch(batch_size: int, mesh: Any) -> int:
    """Rounds the batch up to a multiple of the data axis so it shards evenly."""
    d = mesh.shape[part.DATA_AXIS]
    return max(d, -(-batch_size // d) * d)


def _cut(tokens: np.ndarray, eos: int) -> list[int]:
    out = []
    for t in tokens.tolist():
        if t == eos:
            break
        if t != 0:
            out.append(t)
    return out
