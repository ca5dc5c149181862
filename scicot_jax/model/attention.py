"""Multi-head attention for T5: XLA einsum or jax.nn.dot_product_attention, with decode caches."""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from scicot_jax.model.config import T5Config
from scicot_jax.model.layers import ATTENTION_KERNEL_INIT, Dense, Initializer, constrain

# Finite so that fully masked rows (padding queries) give a uniform softmax instead of NaN.
MASK_VALUE = -1e10


def make_attention_mask(query_ok_BxQ: jax.Array, key_ok_BxK: jax.Array) -> jax.Array:
    """Boolean mask [B, 1, Q, K] from per-position validity of queries and keys."""
    return query_ok_BxQ[:, None, :, None] & key_ok_BxK[:, None, None, :]


def make_segment_mask(query_seg_BxQ: jax.Array, key_seg_BxK: jax.Array) -> jax.Array:
    """Boolean mask [B, 1, Q, K] that is true where query and key share a packed segment."""
    return query_seg_BxQ[:, None, :, None] == key_seg_BxK[:, None, None, :]


@jax.custom_vjp
def add_batch_shared_bias(logits_BxHxQxK: jax.Array, bias_1xHxQxK: jax.Array) -> jax.Array:
    """logits + a bias shared by the batch; its gradient sums the batch with a dot (XLA:CPU)."""
    return logits_BxHxQxK + bias_1xHxQxK


def _add_bias_bwd(_: None, g_BxHxQxK: jax.Array) -> tuple[jax.Array, jax.Array]:
    # As a reduce over the outermost axis, XLA:CPU's YNNPACK fusion of this sum took 14x a dot's
    # time on 2 threads, and more than on 1 (docs/step_speed.md, section 2b).
    ones = jnp.ones(g_BxHxQxK.shape[:1], g_BxHxQxK.dtype)
    return g_BxHxQxK, jnp.einsum("bhqk,b->hqk", g_BxHxQxK, ones)[None]


add_batch_shared_bias.defvjp(lambda logits, bias: (logits + bias, None), _add_bias_bwd)


def xla_attention(
    q_BxQxHxD: jax.Array,
    k_BxKxHxD: jax.Array,
    v_BxKxHxD: jax.Array,
    bias: jax.Array | None,
    mask: jax.Array,
    dropout: nn.Dropout | None = None,
    deterministic: bool = True,
) -> jax.Array:
    """Einsum attention without 1/sqrt(d) scaling; logits and softmax in fp32."""
    logits_BxHxQxK = jnp.einsum(
        "bqhd,bkhd->bhqk", q_BxQxHxD, k_BxKxHxD, preferred_element_type=jnp.float32
    )
    if bias is not None and q_BxQxHxD.dtype == jnp.float32 and bias.shape[0] == 1:
        logits_BxHxQxK = add_batch_shared_bias(logits_BxHxQxK, bias)  # float32: the CPU form
    elif bias is not None:
        logits_BxHxQxK = logits_BxHxQxK + bias
    logits_BxHxQxK = jnp.where(mask, logits_BxHxQxK, MASK_VALUE)
    probs = jax.nn.softmax(logits_BxHxQxK, axis=-1).astype(v_BxKxHxD.dtype)
    if dropout is not None:
        probs = dropout(probs, deterministic=deterministic)
    return jnp.einsum("bhqk,bkhd->bqhd", probs, v_BxKxHxD)


def fused_attention(
    q_BxQxHxD: jax.Array,
    k_BxKxHxD: jax.Array,
    v_BxKxHxD: jax.Array,
    bias: jax.Array | None,
    mask: jax.Array,
    allow_cudnn: bool = True,
) -> jax.Array:
    """jax.nn.dot_product_attention; relative bias as `bias`, mask as `mask`, scale 1.

    On GPU with half-precision activations it asks for the cuDNN kernel; elsewhere jax's
    own XLA implementation runs (jax picks XLA when `implementation` is None).
    """
    half = q_BxQxHxD.dtype in (jnp.bfloat16, jnp.float16)
    impl = "cudnn" if allow_cudnn and half and jax.default_backend() == "gpu" else None
    if bias is not None:
        bias = bias.astype(q_BxQxHxD.dtype)
    return jax.nn.dot_product_attention(
        q_BxQxHxD, k_BxKxHxD, v_BxKxHxD, bias=bias, mask=mask, scale=1.0, implementation=impl
    )


def _group_queries(q_BxQxHxD: jax.Array, mask: jax.Array, n: int) -> tuple[jax.Array, jax.Array]:
    """Rows b*n .. b*n+n-1 (copies of input b) -> one row b with n*Q queries, mask to match."""
    b, q_len = q_BxQxHxD.shape[0] // n, q_BxQxHxD.shape[1]
    q = q_BxQxHxD.reshape((b, n * q_len) + q_BxQxHxD.shape[2:])
    mask = jnp.broadcast_to(mask, (b * n,) + mask.shape[1:3] + (mask.shape[-1],))
    mask = mask.reshape((b, n) + mask.shape[1:]).transpose(0, 2, 1, 3, 4)
    return q, mask.reshape((b, mask.shape[1], n * q_len, mask.shape[-1]))


class MultiHeadAttention(nn.Module):
    """T5 attention block (`query`, `key`, `value`, `out`) with optional decode-time caches.

    In decode mode a self-attention block keeps `cached_key`/`cached_value` [B, max_len, H, D]
    and writes the current step at `decode_index`; a cross-attention block projects the encoder
    output once, on the first call, and reads the cached keys and values on every later step.
    A cross cache with fewer rows than the queries (B vs B * n samples or beams, copies of one
    input adjacent) is shared: each input's n query rows attend to its one K/V as a group.
    """

    config: T5Config
    is_cross: bool = False
    decode: bool = False
    deterministic: bool = True

    @nn.compact
    def __call__(
        self,
        inputs_q: jax.Array,
        inputs_kv: jax.Array,
        bias: jax.Array,
        mask: jax.Array,
        decode_index: jax.Array | None = None,
        max_decode_length: int | None = None,
    ) -> jax.Array:
        cfg = self.config
        heads, d_kv = cfg.num_heads, cfg.d_kv
        # T5 folds the 1/sqrt(d_kv) logit scale into the query initialisation.
        query_init = lambda *a: ATTENTION_KERNEL_INIT(*a) / jnp.sqrt(d_kv).astype(a[-1])

        def proj(name: str, init: Initializer) -> Dense:
            axes = ("embed", "joined_kv")
            return Dense(heads * d_kv, axes, init, cfg, out_shape=(heads, d_kv), name=name)

        def split_heads(x: jax.Array) -> jax.Array:
            return constrain(x, ("batch", "length", "heads", "kv"))

        q = split_heads(proj("query", query_init)(inputs_q))
        if self.decode and self.is_cross:
            if self.has_variable("cache", "cached_key"):
                k = self.get_variable("cache", "cached_key")
                v = self.get_variable("cache", "cached_value")
            else:  # first decode call: project the encoder output once per sequence
                k = split_heads(proj("key", ATTENTION_KERNEL_INIT)(inputs_kv))
                v = split_heads(proj("value", ATTENTION_KERNEL_INIT)(inputs_kv))
                self.put_variable("cache", "cached_key", k)
                self.put_variable("cache", "cached_value", v)
        else:
            k = split_heads(proj("key", ATTENTION_KERNEL_INIT)(inputs_kv))
            v = split_heads(proj("value", ATTENTION_KERNEL_INIT)(inputs_kv))
        if self.decode and not self.is_cross:
            k, v = self._update_cache(k, v, decode_index, max_decode_length)

        groups = q.shape[0] // k.shape[0]
        if groups > 1:  # samples/beams share their input's cross K/V: attend as one query group
            q, mask = _group_queries(q, mask, groups)
        if cfg.attention_impl == "dot_product":
            # jax.nn.dot_product_attention has no probability dropout; residual dropout still applies.
            out = fused_attention(q, k, v, bias, mask, allow_cudnn=not self.decode)
        else:
            drop = nn.Dropout(cfg.dropout_rate) if cfg.dropout_rate > 0 else None
            out = xla_attention(q, k, v, bias, mask, drop, self.deterministic)
        if groups > 1:
            out = out.reshape((-1, out.shape[1] // groups) + out.shape[2:])
        out_proj = Dense(
            cfg.d_model, ("joined_kv", "embed"), ATTENTION_KERNEL_INIT, cfg, in_axes=2, name="out"
        )
        return out_proj(out)

    def _update_cache(
        self, k_Bx1xHxD: jax.Array, v_Bx1xHxD: jax.Array, index: jax.Array, max_len: int | None
    ) -> tuple[jax.Array, jax.Array]:
        """Write this step's key/value at `index`; return the whole cache [B, max_len, H, D]."""
        if k_Bx1xHxD.shape[1] != 1:
            raise ValueError(
                f"decode mode takes one token per step, got length {k_Bx1xHxD.shape[1]}"
            )
        if not self.has_variable("cache", "cached_key") and max_len is None:
            raise ValueError(
                "decode=True needs max_decode_length on the first (cache-creating) call"
            )
        shape = (k_Bx1xHxD.shape[0], max_len or 0) + k_Bx1xHxD.shape[2:]
        cached_k = self.variable("cache", "cached_key", jnp.zeros, shape, k_Bx1xHxD.dtype)
        cached_v = self.variable("cache", "cached_value", jnp.zeros, shape, v_Bx1xHxD.dtype)
        start = (0, index, 0, 0)
        cached_k.value = jax.lax.dynamic_update_slice(cached_k.value, k_Bx1xHxD, start)
        cached_v.value = jax.lax.dynamic_update_slice(cached_v.value, v_Bx1xHxD, start)
        return cached_k.value, cached_v.value
