"""T5 relative position buckets and the per-stack `relpos_bias` module."""

from __future__ import annotations

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from scicot_jax.model.config import T5Config
from scicot_jax.model.layers import RELPOS_INIT, logical_param


def relative_position_bucket(
    relative_position: np.ndarray, *, bidirectional: bool, num_buckets: int, max_distance: int
) -> np.ndarray:
    """T5's bucket of `key_pos - query_pos` (numpy, float32 like Mesh TF / Hugging Face)."""
    n = -np.asarray(relative_position, dtype=np.int64)
    ret = np.zeros_like(n)
    if bidirectional:
        num_buckets //= 2
        ret += (n < 0).astype(np.int64) * num_buckets
        n = np.abs(n)
    else:
        n = np.maximum(n, 0)
    max_exact = num_buckets // 2
    is_small = n < max_exact
    with np.errstate(divide="ignore"):  # log(0) only where is_small already picks n
        log_ratio = np.log(n.astype(np.float32) / np.float32(max_exact)) / np.float32(
            np.log(max_distance / max_exact)
        )
    large = max_exact + np.nan_to_num(
        log_ratio * np.float32(num_buckets - max_exact), neginf=0
    ).astype(np.int64)
    large = np.minimum(large, num_buckets - 1)
    return (ret + np.where(is_small, n, large)).astype(np.int32)


@functools.lru_cache(maxsize=32)
def _bucket_table(bidirectional: bool, num_buckets: int, max_distance: int) -> np.ndarray:
    """Bucket of every relative position in [-max_distance, max_distance]; beyond it is constant."""
    rel = np.arange(-max_distance, max_distance + 1)
    return relative_position_bucket(
        rel, bidirectional=bidirectional, num_buckets=num_buckets, max_distance=max_distance
    )


def bucket_of(
    relative_position: jax.Array, *, bidirectional: bool, num_buckets: int, max_distance: int
) -> jax.Array:
    """Bucket ids for traced relative positions via a static lookup table (same on every backend)."""
    table = jnp.asarray(_bucket_table(bidirectional, num_buckets, max_distance))
    clipped = jnp.clip(relative_position, -max_distance, max_distance) + max_distance
    return jnp.take(table, clipped, axis=0)


class RelativePositionBiases(nn.Module):
    """Learned per-head bias for each relative position bucket, shared by all layers of a stack."""

    config: T5Config
    bidirectional: bool

    @nn.compact
    def __call__(self, query_pos: jax.Array, key_pos: jax.Array) -> jax.Array:
        """Bias [1, heads, Q, K] for query positions [Q] and key positions [K]."""
        cfg = self.config
        table = logical_param(
            self,
            "rel_embedding",
            RELPOS_INIT,
            (cfg.num_heads, cfg.relative_attention_num_buckets),
            ("heads", "relpos_buckets"),
            cfg.weight_dtype,
        )
        buckets_QxK = bucket_of(
            key_pos[None, :] - query_pos[:, None],
            bidirectional=self.bidirectional,
            num_buckets=cfg.relative_attention_num_buckets,
            max_distance=cfg.relative_attention_max_distance,
        )
        bias_HxQxK = jnp.take(table, buckets_QxK, axis=1)
        return bias_HxQxK[None].astype(jnp.float32)
