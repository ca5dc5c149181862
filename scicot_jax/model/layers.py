"""T5 v1.1 building blocks with t5x parameter names and logical axis annotations."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from scicot_jax.model.config import T5Config

Initializer = Callable[..., jax.Array]

# t5x initialisers (t5x/examples/t5/layers.py).
ATTENTION_KERNEL_INIT = nn.initializers.variance_scaling(1.0, "fan_in", "normal")
MLP_KERNEL_INIT = nn.initializers.variance_scaling(1.0, "fan_in", "truncated_normal")
EMBEDDING_INIT = nn.initializers.normal(stddev=1.0)
RELPOS_INIT = nn.initializers.variance_scaling(1.0, "fan_avg", "uniform")


def logical_param(
    module: nn.Module,
    name: str,
    init: Initializer,
    shape: tuple[int, ...],
    axes: tuple[str, ...],
    dtype: Any,
) -> jax.Array:
    """A parameter annotated with logical axis names, so the trainer can shard it by rules."""
    return module.param(name, nn.with_logical_partitioning(init, axes), shape, dtype)


def constrain(x: jax.Array, axes: tuple[str | None, ...]) -> jax.Array:
    """Sharding constraint on an activation; a no-op unless logical axis rules are active."""
    return nn.with_logical_constraint(x, axes)


class RMSNorm(nn.Module):
    """T5 layer norm: scale only, no mean subtraction, no bias; statistics in fp32."""

    config: T5Config

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        cfg = self.config
        x = x.astype(jnp.float32)
        mean2 = jnp.mean(jnp.square(x), axis=-1, keepdims=True)
        y = (x * jax.lax.rsqrt(mean2 + cfg.layer_norm_epsilon)).astype(cfg.activation_dtype)
        scale = logical_param(
            self, "scale", nn.initializers.ones, (x.shape[-1],), ("embed",), cfg.weight_dtype
        )
        return y * scale.astype(cfg.activation_dtype)


class Dense(nn.Module):
    """Bias-free projection with a 2-D kernel [in, out] (t5x's stored kernel layout).

    `in_axes` trailing input axes are contracted (2 for attention's [.., heads, d_kv] output);
    `out_shape` splits the output features (e.g. (heads, d_kv)); the kernel stays 2-D.
    """

    features: int
    kernel_axes: tuple[str, str]
    kernel_init: Initializer
    config: T5Config
    dtype: Any = None  # compute dtype; defaults to config.dtype
    in_axes: int = 1
    out_shape: tuple[int, ...] | None = None
    # Half precision: the kernel's gradient, all-reduced over data-parallel replicas, is made
    # before the input's gradient flows on (an optimization barrier on both). For logits_dense,
    # whose gradient needs the [B, L, vocab] float32 logits: otherwise XLA:TPU merges its
    # all-reduce with the end of the backward's and keeps the logits alive until then.
    kernel_grad_first: bool = False

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        dtype = self.dtype or self.config.activation_dtype
        in_shape = x.shape[x.ndim - self.in_axes :]
        out_shape = self.out_shape or (self.features,)
        kernel = logical_param(
            self,
            "kernel",
            self.kernel_init,
            (math.prod(in_shape), self.features),
            self.kernel_axes,
            self.config.weight_dtype,
        ).astype(dtype)
        batch_shape = x.shape[: x.ndim - self.in_axes]
        if self.config.half_precision:
            # t5x's DenseGeneral: contract [B, L, in...] with the kernel viewed as [in..., out...]
            # so XLA:TPU picks each side's layout, with no relayout copies around reshapes.
            if self.kernel_grad_first:
                x, kernel = jax.lax.optimization_barrier((x, kernel))
            k = kernel.reshape(in_shape + out_shape)
            dims = (tuple(range(x.ndim - self.in_axes, x.ndim)), tuple(range(self.in_axes)))
            return jax.lax.dot_general(x.astype(dtype), k, (dims, ((), ())))
        # Tokens flattened to one axis: the kernel gradient is then one [in, tokens] x [tokens,
        # out] matmul. With [B, L, in] XLA:CPU transposes the [tokens, out] gradient first
        # (a strided copy fused into the GELU backward, 16% of the CPU bench's step).
        x2 = x.reshape(-1, kernel.shape[0]).astype(dtype)
        return jnp.dot(x2, kernel).reshape(batch_shape + out_shape)


class Embed(nn.Module):
    """Token embedding table shared by encoder and decoder inputs."""

    config: T5Config

    @nn.compact
    def __call__(self, ids: jax.Array) -> jax.Array:
        cfg = self.config
        table = logical_param(
            self,
            "embedding",
            EMBEDDING_INIT,
            (cfg.vocab_size, cfg.d_model),
            ("vocab", "embed"),
            cfg.weight_dtype,
        )
        return jnp.take(table, ids.astype(jnp.int32), axis=0, mode="clip").astype(
            cfg.activation_dtype
        )


class MlpBlock(nn.Module):
    """Gated-GELU feed-forward: wo(gelu(wi_0 x) * wi_1 x)."""

    config: T5Config
    deterministic: bool = True

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        cfg = self.config
        dense = lambda n, f, axes: Dense(f, axes, MLP_KERNEL_INIT, cfg, name=n)
        gate = nn.gelu(dense("wi_0", cfg.d_ff, ("embed", "mlp"))(x), approximate=True)
        h = gate * dense("wi_1", cfg.d_ff, ("embed", "mlp"))(x)
        h = constrain(h, ("batch", "length", "mlp"))
        h = nn.Dropout(cfg.dropout_rate, broadcast_dims=(-2,))(h, deterministic=self.deterministic)
        return dense("wo", cfg.d_model, ("mlp", "embed"))(h)
