"""FLOPs per example: a hand count on tiny, and agreement with XLA's own count of the forward."""

import jax
import jax.numpy as jnp

from scicot_jax.model import T5Config, Transformer, param_shapes
from scicot_jax.model.flops import flops_breakdown, flops_per_example


def test_hand_count_on_tiny():
    cfg = T5Config.preset("tiny")  # d_model 64, heads*d_kv 64, d_ff 128, vocab 32128, 2+2 layers
    li, lt = 16, 8
    hand = {
        "encoder_projections": 2 * li * (2 * 4 * 64 * 64),
        "encoder_mlp": 2 * li * (2 * 3 * 64 * 128),
        "encoder_attention": 2 * (2 * 2 * li * li * 64),
        "decoder_self_projections": 2 * lt * (2 * 4 * 64 * 64),
        "decoder_cross_projections": 2 * (lt * 2 * 2 * 64 * 64 + li * 2 * 2 * 64 * 64),
        "decoder_mlp": 2 * lt * (2 * 3 * 64 * 128),
        "decoder_self_attention": 2 * (2 * 2 * lt * lt * 64),
        "decoder_cross_attention": 2 * (2 * 2 * lt * li * 64),
        "logits": lt * 2 * 64 * 32128,
    }
    assert flops_breakdown(cfg, li, lt) == hand
    assert flops_per_example(cfg, li, lt, training=False) == 37_847_040
    assert flops_per_example(cfg, li, lt) == 3 * 37_847_040


def test_close_to_xla_cost_of_the_forward():
    cfg = T5Config.preset("tiny", vocab_size=256, dtype="float32")
    enc = jax.ShapeDtypeStruct((1, 16), jnp.int32)
    dec = jax.ShapeDtypeStruct((1, 8), jnp.int32)
    forward = jax.jit(
        lambda p, e, d: Transformer(cfg).apply({"params": p}, e, d, d, enable_dropout=False)
    )
    xla_flops = forward.lower(param_shapes(cfg), enc, dec).cost_analysis()["flops"]
    ours = flops_per_example(cfg, 16, 8, training=False)
    # XLA also counts norms, softmax and activations; matmuls are all but a few percent.
    assert 0.95 * xla_flops <= ours <= xla_flops


def test_scales_with_model_size():
    small = flops_per_example(T5Config.preset("small"), 512, 128)
    base = flops_per_example(T5Config.preset("base"), 512, 128)
    assert 2.5 < base / small < 4.0
