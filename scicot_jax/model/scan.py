"""Convert between per-layer (`layers_{i}`, t5x layout) and scanned (`layers`, axis 0) param trees."""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp

from scicot_jax.model.config import T5Config


def _stacks(config: T5Config) -> dict[str, int]:
    return {"encoder": config.num_encoder_layers, "decoder": config.num_decoder_layers}


def scan_params(params: dict[str, Any], config: T5Config) -> dict[str, Any]:
    """Stack `{encoder,decoder}/layers_{i}/...` into `{encoder,decoder}/layers/...` with a leading layer axis."""
    out = dict(params)
    for stack, n in _stacks(config).items():
        tree = dict(params[stack])
        missing = [f"{stack}/layers_{i}" for i in range(n) if f"layers_{i}" not in tree]
        if missing:
            raise ValueError(
                f"scan_params: per-layer params missing {missing[:3]} (tree already scanned?)"
            )
        layers = [tree.pop(f"layers_{i}") for i in range(n)]
        tree["layers"] = jax.tree.map(lambda *xs: jnp.stack(xs), *layers)
        out[stack] = tree
    return out


def unscan_params(params: dict[str, Any], config: T5Config) -> dict[str, Any]:
    """Inverse of `scan_params`: split `layers` (leading axis) back into `layers_{i}`."""
    out = dict(params)
    for stack, n in _stacks(config).items():
        tree = dict(params[stack])
        if "layers" not in tree:
            raise ValueError(f"unscan_params: {stack}/layers missing (tree not scanned?)")
        stacked = tree.pop("layers")
        for leaf_path, leaf in jax.tree_util.tree_leaves_with_path(stacked):
            if leaf.shape[0] != n:
                path = jax.tree_util.keystr(leaf_path)
                raise ValueError(
                    f"unscan_params: {stack}/layers{path} has leading axis {leaf.shape[0]}, expected {n}"
                )
        for i in range(n):
            tree[f"layers_{i}"] = jax.tree.map(lambda x, i=i: x[i], stacked)
        out[stack] = tree
    return out
