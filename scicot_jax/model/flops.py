"""Matmul FLOPs of a T5 v1.1 model per example, for MFU reporting."""

from __future__ import annotations

from scicot_jax.model.config import T5Config


def flops_breakdown(config: T5Config, input_len: int, target_len: int) -> dict[str, float]:
    """Forward-pass FLOPs (2 per multiply-add) by component, for one example of the given lengths.

    Encoder weights see the input tokens and decoder weights the target tokens, except the
    cross-attention key/value projections, which run over the encoder output (input tokens).
    Attention terms count the full score matrix (QK^T and probs.V); norms, softmax and
    embedding lookups are ignored. Padding is counted: lengths are the padded lengths.
    """
    d, hd, ff, vocab = (
        config.d_model,
        config.num_heads * config.d_kv,
        config.d_ff,
        config.vocab_size,
    )
    li, lt = float(input_len), float(target_len)
    n_enc, n_dec = config.num_encoder_layers, config.num_decoder_layers
    mlp = 2 * 3 * d * ff  # wi_0, wi_1, wo per token
    return {
        "encoder_projections": n_enc * li * 2 * 4 * d * hd,  # query, key, value, out
        "encoder_mlp": n_enc * li * mlp,
        "encoder_attention": n_enc * 2 * 2 * li * li * hd,
        "decoder_self_projections": n_dec * lt * 2 * 4 * d * hd,
        "decoder_cross_projections": n_dec * (lt * 2 * 2 * d * hd + li * 2 * 2 * d * hd),
        "decoder_mlp": n_dec * lt * mlp,
        "decoder_self_attention": n_dec * 2 * 2 * lt * lt * hd,
        "decoder_cross_attention": n_dec * 2 * 2 * lt * li * hd,
        "logits": lt * 2 * d * vocab,
    }


def flops_per_example(
    config: T5Config, input_len: int, target_len: int, training: bool = True
) -> float:
    """FLOPs for one example; training = forward + backward = 3x forward."""
    forward = sum(flops_breakdown(config, input_len, target_len).values())
    return 3.0 * forward if training else forward
