"""Cross-entropy with t5x's semantics: z-loss, label smoothing, loss normalizing factor."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

# Special values for `loss_normalizing_factor` (t5x's SpecialLossNormalizingFactor).
NUM_REAL_TARGET_TOKENS = "NUM_REAL_TARGET_TOKENS"
NUM_TOTAL_TARGET_TOKENS = "NUM_TOTAL_TARGET_TOKENS"
AVERAGE_PER_SEQUENCE = "AVERAGE_PER_SEQUENCE"
SPECIAL_FACTORS = (NUM_REAL_TARGET_TOKENS, NUM_TOTAL_TARGET_TOKENS, AVERAGE_PER_SEQUENCE)


@jax.custom_vjp
def cross_entropy_with_logits(
    logits_BxLxV: jax.Array, soft_targets_BxLxV: jax.Array, z_loss: float
) -> tuple[jax.Array, jax.Array]:
    """Per-token soft-target cross entropy plus z_loss * log(Z)^2; returns (loss, z_loss).

    Custom VJP as in t5x: the backward pass is one fused (softmax - targets) expression instead
    of autodiff's several [B, L, V] float32 intermediates.
    """
    return _xent_fwd(logits_BxLxV, soft_targets_BxLxV, z_loss)[0]


def _xent_fwd(logits: jax.Array, targets: jax.Array, z_loss: float) -> tuple[tuple, tuple]:
    max_logit = jax.lax.stop_gradient(jnp.max(logits, axis=-1, keepdims=True))
    shifted = logits - max_logit
    exp_shifted = jnp.exp(shifted)
    sum_exp = jnp.sum(exp_shifted, axis=-1, keepdims=True)
    log_softmax = shifted - jnp.log(sum_exp)
    loss = -jnp.sum(targets * log_softmax, axis=-1)
    log_z = jnp.squeeze(jnp.log(sum_exp) + max_logit, axis=-1)
    total_z = z_loss * jnp.square(log_z)
    return (loss + total_z, total_z), (logits, targets, z_loss, exp_shifted, sum_exp, log_z)


def _xent_bwd(res: tuple, g: tuple) -> tuple:
    logits, targets, z_loss, exp_shifted, sum_exp, log_z = res
    g = g[0]  # the z-loss output is for logging; its gradient is already in the first output
    deriv = (1 + 2 * z_loss * log_z)[..., None] * exp_shifted / sum_exp - targets
    g_logits = g[..., None] * deriv
    g_targets = -g[..., None] * (logits - jnp.log(sum_exp) - jnp.max(logits, -1, keepdims=True))
    return g_logits.astype(logits.dtype), g_targets, jnp.zeros_like(jnp.asarray(z_loss))


cross_entropy_with_logits.defvjp(_xent_fwd, _xent_bwd)


def weighted_cross_entropy(
    logits_BxLxV: jax.Array,
    targets_BxL: jax.Array,
    weights_BxL: jax.Array | None = None,
    label_smoothing: float = 0.0,
    z_loss: float = 0.0,
    loss_normalizing_factor: float | None = None,
) -> tuple[jax.Array, jax.Array, jax.Array]:
    """t5x's compute_weighted_cross_entropy: (total_loss, total_z_loss, weight_sum)."""
    vocab = logits_BxLxV.shape[-1]
    logits_BxLxV = logits_BxLxV.astype(jnp.float32)
    confidence = 1.0 - label_smoothing
    low = (1.0 - confidence) / (vocab - 1)
    # Subtracting the entropy of the smoothed target makes a perfect prediction score zero.
    normalizer = -(confidence * np.log(confidence) + (vocab - 1) * low * np.log(low + 1e-20))
    soft = jax.nn.one_hot(targets_BxL, vocab, dtype=jnp.float32) * (confidence - low) + low
    loss_BxL, z_BxL = cross_entropy_with_logits(logits_BxLxV, soft, z_loss)
    loss_BxL = loss_BxL - normalizer
    if weights_BxL is None:
        weights_BxL = jnp.ones_like(loss_BxL)
    weights_BxL = weights_BxL.astype(jnp.float32)
    total, total_z = jnp.sum(loss_BxL * weights_BxL), jnp.sum(z_BxL * weights_BxL)
    if loss_normalizing_factor is not None:
        total, total_z = total / loss_normalizing_factor, total_z / loss_normalizing_factor
    return total, total_z, jnp.sum(weights_BxL)


def loss_weights(batch: dict) -> jax.Array:
    """Per-token loss weights: decoder_loss_weights if given, else target != 0."""
    if "decoder_loss_weights" in batch:
        return jnp.asarray(batch["decoder_loss_weights"], jnp.float32)
    return (jnp.asarray(batch["decoder_target_tokens"]) > 0).astype(jnp.float32)


def normalizing_factor_and_weights(
    factor: float | str | None, batch: dict
) -> tuple[jax.Array | float | None, jax.Array]:
    """Resolves special normalizing factors over the *full* batch (before microbatching)."""
    weights_BxL = loss_weights(batch)
    if factor is None or isinstance(factor, int | float):
        return factor, weights_BxL
    if factor == NUM_REAL_TARGET_TOKENS:
        return jnp.maximum(jnp.sum(weights_BxL), 1.0), weights_BxL
    if factor == NUM_TOTAL_TARGET_TOKENS:
        return float(np.prod(weights_BxL.shape)), weights_BxL
    if factor == AVERAGE_PER_SEQUENCE:
        # Each sequence (each packed segment, when segment ids exist) weighs the same.
        seg = batch.get("decoder_segment_ids")
        if seg is None:
            per_seq = jnp.sum(weights_BxL, axis=-1, keepdims=True)
            weights_BxL = weights_BxL / jnp.maximum(per_seq, 1e-9)
            num_seqs = jnp.sum(per_seq > 0)
        else:
            seg = jnp.asarray(seg)
            onehot = jax.nn.one_hot(seg, seg.shape[-1] + 1)[..., 1:]  # drop padding segment 0
            per_seg = jnp.einsum("bl,bls->bs", weights_BxL, onehot)
            tok_seg_total = jnp.einsum("bs,bls->bl", per_seg, onehot)
            weights_BxL = jnp.where(
                tok_seg_total > 0, weights_BxL / jnp.maximum(tok_seg_total, 1e-9), 0.0
            )
            num_seqs = jnp.sum(per_seg > 0)
        return jnp.maximum(num_seqs.astype(jnp.float32), 1.0), weights_BxL
    raise ValueError(
        f"loss_normalizing_factor={factor!r}; expected a number, None or one of {SPECIAL_FACTORS}"
    )
