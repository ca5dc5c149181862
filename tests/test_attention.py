"""Attention: XLA einsum path == jax.nn.dot_product_attention path; relative position buckets."""

import math

import jax
import numpy as np

from scicot_jax.model import T5Config, Transformer, init_params
from scicot_jax.model.attention import fused_attention, make_attention_mask, xla_attention
from scicot_jax.model.relpos import RelativePositionBiases, bucket_of, relative_position_bucket


def reference_bucket(rel: int, bidirectional: bool, num_buckets: int, max_distance: int) -> int:
    """Mesh TensorFlow's formula, in float64 Python."""
    n, ret = -rel, 0
    if bidirectional:
        num_buckets //= 2
        ret += num_buckets if n < 0 else 0
        n = abs(n)
    else:
        n = max(n, 0)
    max_exact = num_buckets // 2
    if n < max_exact:
        return ret + n
    large = max_exact + int(
        math.log(n / max_exact) / math.log(max_distance / max_exact) * (num_buckets - max_exact)
    )
    return ret + min(large, num_buckets - 1)


def test_relative_position_buckets():
    rel = np.arange(-400, 401)
    for bidirectional in (True, False):
        got = relative_position_bucket(
            rel, bidirectional=bidirectional, num_buckets=32, max_distance=128
        )
        want = [reference_bucket(int(r), bidirectional, 32, 128) for r in rel]
        np.testing.assert_array_equal(got, want)
        traced = bucket_of(rel, bidirectional=bidirectional, num_buckets=32, max_distance=128)
        np.testing.assert_array_equal(traced, want)
    # Hand-checked values: keys before the query use buckets 0-15, after it 16-31 (encoder).
    enc = lambda r: int(
        relative_position_bucket(np.array(r), bidirectional=True, num_buckets=32, max_distance=128)
    )
    dec = lambda r: int(
        relative_position_bucket(np.array(r), bidirectional=False, num_buckets=32, max_distance=128)
    )
    assert [enc(0), enc(-1), enc(1), enc(-7), enc(-8), enc(-16), enc(-500), enc(500)] == [
        0,
        1,
        17,
        7,
        8,
        10,
        15,
        31,
    ]
    assert [dec(5), dec(0), dec(-3), dec(-20), dec(-1000)] == [0, 0, 3, 17, 31]


def test_relpos_bias_is_the_table_at_each_bucket():
    """Exactly table[:, bucket] for every query/key pair, bidirectional or causal."""
    cfg = T5Config.preset("tiny", dtype="float32")
    pos = jax.numpy.arange(40)
    for bidirectional in (True, False):
        module = RelativePositionBiases(cfg, bidirectional=bidirectional)
        table = jax.random.normal(jax.random.key(1), (cfg.num_heads, 32))
        bias = module.apply({"params": {"rel_embedding": table}}, pos, pos)
        buckets = bucket_of(
            pos[None, :] - pos[:, None],
            bidirectional=bidirectional,
            num_buckets=32,
            max_distance=cfg.relative_attention_max_distance,
        )
        np.testing.assert_array_equal(bias[0], np.asarray(table)[:, np.asarray(buckets)])


def test_attention_kernels_agree():
    rng = np.random.default_rng(0)
    q, k, v = (rng.normal(size=(2, 5, 3, 8)).astype(np.float32) for _ in range(3))
    k, v = k[:, :4], v[:, :4]
    bias = rng.normal(size=(1, 3, 5, 4)).astype(np.float32)
    q_ok = np.array([[1, 1, 1, 1, 0], [1, 1, 1, 1, 1]], bool)
    k_ok = np.array([[1, 1, 0, 0], [1, 1, 1, 1]], bool)
    mask = make_attention_mask(q_ok, k_ok)
    ours = np.asarray(xla_attention(q, k, v, bias, mask))
    fused = np.asarray(fused_attention(q, k, v, bias, mask))
    np.testing.assert_allclose(ours[q_ok], fused[q_ok], atol=1e-5, rtol=1e-5)
    # Unscaled: the einsum path is plain softmax(q.k + bias) v.
    logits = np.einsum("qhd,khd->hqk", q[1], k[1]) + bias[0]
    probs = np.exp(logits - logits.max(-1, keepdims=True))
    probs /= probs.sum(-1, keepdims=True)
    np.testing.assert_allclose(
        ours[1], np.einsum("hqk,khd->qhd", probs, v[1]), atol=1e-5, rtol=1e-5
    )


def test_model_attention_impls_agree():
    cfg = T5Config.preset("tiny", vocab_size=96, dtype="float32")
    params = init_params(cfg, jax.random.key(3))
    enc = np.array([[5, 6, 7, 8, 9, 1, 0], [4, 1, 3, 3, 1, 0, 0]], np.int32)
    enc_seg = np.array([[1, 1, 1, 1, 1, 1, 0], [1, 1, 2, 2, 2, 0, 0]], np.int32)
    tgt = np.array([[8, 9, 1, 0], [2, 1, 7, 1]], np.int32)
    dec_seg = np.array([[1, 1, 1, 0], [1, 1, 2, 2]], np.int32)
    dec_in = np.array([[0, 8, 9, 0], [0, 2, 0, 7]], np.int32)

    @jax.jit
    def both(params):
        run = lambda c: Transformer(c).apply(
            {"params": params}, enc, dec_in, tgt, enc_seg, dec_seg, enable_dropout=False
        )
        return run(cfg), run(cfg.replace(attention_impl="dot_product"))

    xla, fused = both(params)
    real = tgt != 0
    np.testing.assert_allclose(np.asarray(xla)[real], np.asarray(fused)[real], atol=1e-5, rtol=1e-5)
