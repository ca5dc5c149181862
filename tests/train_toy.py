"""A tiny encoder-decoder-shaped flax module and batches, for trainer tests without T5."""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from scicot_jax.data.tokens import shift_right
from scicot_jax.train.state import ModelSpec

VOCAB, D = 32, 16


class Toy(nn.Module):
    """Embeds tokens, mixes in the mean encoder state, projects to the vocab."""

    dropout_rate: float = 0.1

    @nn.compact
    def __call__(self, batch: dict, enable_dropout: bool) -> jax.Array:
        emb = self.param(
            "embedding",
            nn.with_logical_partitioning(nn.initializers.normal(1.0), ("vocab", "embed")),
            (VOCAB, D),
        )
        wi = self.param(
            "wi",
            nn.with_logical_partitioning(nn.initializers.lecun_normal(), ("embed", "mlp")),
            (D, 32),
        )
        wo = self.param(
            "wo",
            nn.with_logical_partitioning(nn.initializers.lecun_normal(), ("mlp", "embed")),
            (32, D),
        )
        out = self.param(
            "logits",
            nn.with_logical_partitioning(nn.initializers.lecun_normal(), ("embed", "vocab")),
            (D, VOCAB),
        )
        scale = self.param(
            "scale", nn.with_logical_partitioning(nn.initializers.ones, ("embed",)), (D,)
        )
        enc = jnp.take(emb, batch["encoder_input_tokens"], axis=0).mean(1, keepdims=True)
        x = jnp.take(emb, batch["decoder_input_tokens"], axis=0) + enc
        h = nn.Dropout(self.dropout_rate, deterministic=not enable_dropout)(jax.nn.gelu(x @ wi))
        x = (x + h @ wo) * scale
        return (x @ out).astype(jnp.float32)


def toy_spec(dropout_rate: float = 0.1) -> ModelSpec:
    module = Toy(dropout_rate)
    dummy = {
        k: jnp.zeros((1, 4), jnp.int32) for k in ("encoder_input_tokens", "decoder_input_tokens")
    }

    def init(rng: jax.Array):
        return nn.unbox(module.init(rng, dummy, False))["params"]

    def apply(params, batch, rng, enable_dropout):
        return module.apply(
            {"params": params},
            batch,
            enable_dropout,
            rngs={"dropout": rng} if enable_dropout else None,
        )

    boxed = jax.eval_shape(lambda: module.init(jax.random.key(0), dummy, False))
    axes = nn.get_partition_spec(boxed)["params"]
    return ModelSpec(
        apply=apply,
        init=init,
        logical_axes=axes,
        flops_per_example=lambda i, t: 6.0 * t * (2 * D * 32 + D * VOCAB),
    )


def toy_batches(batch_size: int = 8, in_len: int = 6, tgt_len: int = 5, seed: int = 0):
    """Deterministic endless batches: target = input tokens shifted (learnable)."""
    rng = np.random.default_rng(seed)
    while True:
        inp = rng.integers(2, VOCAB, (batch_size, in_len)).astype(np.int32)
        tgt = np.concatenate([inp[:, 1:tgt_len], np.ones((batch_size, 1), np.int32)], 1)
        tgt[: batch_size // 2, -2:] = 0  # some padding
        dec_in = shift_right(tgt, 0)
        yield {
            "encoder_input_tokens": inp,
            "decoder_input_tokens": dec_in,
            "decoder_target_tokens": tgt,
            "decoder_loss_weights": (tgt > 0).astype(np.int32),
        }
