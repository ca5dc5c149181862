"""Teacher-forced scoring: per-example log-likelihood of given targets (MoRSD's rationale difficulty)."""

from __future__ import annotations

import functools
from typing import Any

import jax
import jax.numpy as jnp

from scicot_jax.model.config import T5Config
from scicot_jax.model.t5 import Transformer

_OPTIONAL = ("encoder_segment_ids", "decoder_segment_ids", "encoder_positions", "decoder_positions")


def score(
    params: Any, config: T5Config, batch: dict[str, Any], vocab_size: int | None = None
) -> dict[str, jax.Array]:
    """{"sum_logprob", "mean_logprob", "num_tokens"} per example [B], over target tokens != pad;
    with `vocab_size`, normalised over the vocabulary's ids only (not spare embedding rows)."""
    for key in ("encoder_input_tokens", "decoder_input_tokens", "decoder_target_tokens"):
        if key not in batch:
            raise ValueError(f"score: batch is missing {key!r} (has {sorted(batch)})")
    inputs = {
        k: jnp.asarray(batch[k], jnp.int32)
        for k in ("encoder_input_tokens", "decoder_input_tokens", "decoder_target_tokens")
    }
    inputs.update(
        {k: jnp.asarray(batch[k], jnp.int32) for k in _OPTIONAL if batch.get(k) is not None}
    )
    limit = vocab_size if vocab_size and vocab_size < config.vocab_size else None
    return _score(params, inputs, config=config, vocab_size=limit)


@functools.partial(jax.jit, static_argnames=("config", "vocab_size"))
def _score(
    params: Any, inputs: dict[str, jax.Array], *, config: T5Config, vocab_size: int | None
) -> dict[str, jax.Array]:
    logits = Transformer(config).apply({"params": params}, **inputs, enable_dropout=False)
    return token_logprob_sums(logits, inputs["decoder_target_tokens"], config.pad_id, vocab_size)


def token_logprob_sums(
    logits_BxLxV: jax.Array,
    targets_BxL: jax.Array,
    pad_id: int = 0,
    vocab_size: int | None = None,
) -> dict[str, jax.Array]:
    """Sum / mean / count of log p(target) over non-pad target positions (the softmax over the
    first `vocab_size` ids when given)."""
    logits = logits_BxLxV.astype(jnp.float32)
    if vocab_size is not None:
        logits = jnp.where(jnp.arange(logits.shape[-1]) < vocab_size, logits, -1.0e9)
    logprobs = jax.nn.log_softmax(logits, axis=-1)
    token_lp = jnp.take_along_axis(logprobs, targets_BxL[..., None], axis=-1)[..., 0]
    weights = (targets_BxL != pad_id).astype(jnp.float32)
    total = jnp.sum(token_lp * weights, axis=-1)
    count = jnp.sum(weights, axis=-1)
    return {
        "sum_logprob": total,
        "mean_logprob": total / jnp.maximum(count, 1.0),
        "num_tokens": count.astype(jnp.int32),
    }
