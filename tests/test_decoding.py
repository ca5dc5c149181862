"""Decoding: cached greedy == full recompute; sampling, beam search and early stopping."""

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from scicot_jax.model import T5Config, Transformer, init_params
from scicot_jax.model.decoding import (
    DecodeConfig,
    _repeat_batch,
    beam_search,
    generate,
    length_penalty,
    prefill,
    sample_loop,
    sample_token,
)
from scicot_jax.model.scan import scan_params
from scicot_jax.model.scoring import score

CFG = T5Config.preset("tiny", vocab_size=16, dtype="float32")
MAX_LEN = 8
# Row 3 makes the random model emit EOS at once, so ended sequences are exercised too.
ENC = np.array(
    [[5, 6, 7, 1, 0, 0], [9, 3, 4, 4, 2, 1], [3, 1, 0, 0, 0, 0], [7, 7, 8, 1, 0, 0]], np.int32
)


@pytest.fixture(scope="module")
def params():
    return init_params(CFG, jax.random.key(0))


@pytest.fixture(scope="module")
def greedy(params):
    return generate(params, CFG, ENC, DecodeConfig(max_decode_length=MAX_LEN))


def recompute_greedy(params, cfg, enc, max_len):
    """Argmax decoding by re-running the full decoder on the prefix at every step (no cache)."""

    @jax.jit
    def logits_fn(dec_in):
        return Transformer(cfg).apply(
            {"params": params}, enc, dec_in, jnp.ones_like(dec_in), enable_dropout=False
        )

    b = enc.shape[0]
    dec_in = np.zeros((b, max_len), np.int32)
    out = np.zeros((b, max_len), np.int32)
    ended, logprob = np.zeros(b, bool), np.zeros(b)
    for i in range(max_len):
        logits = np.asarray(logits_fn(dec_in))[:, i]
        masked = logits.copy()
        masked[:, cfg.pad_id] = -np.inf  # generate never emits padding
        token = np.where(ended, 0, masked.argmax(-1))
        logprob += np.where(ended, 0.0, np.asarray(jax.nn.log_softmax(logits))[np.arange(b), token])
        out[:, i] = token
        ended |= token == cfg.eos_id
        if i + 1 < max_len:
            dec_in[:, i + 1] = token
    return out, logprob


def test_cached_greedy_matches_full_recompute(params, greedy):
    tokens, scores = greedy
    assert tokens.shape == (4, 1, MAX_LEN) and tokens.dtype == jnp.int32 and scores.shape == (4, 1)
    want_tokens, want_scores = recompute_greedy(params, CFG, ENC, MAX_LEN)
    np.testing.assert_array_equal(tokens[:, 0], want_tokens)
    np.testing.assert_allclose(scores[:, 0], want_scores, rtol=1e-5, atol=1e-5)
    assert tokens[3, 0, 0] == CFG.eos_id and np.all(tokens[3, 0, 1:] == 0)
    assert not np.any(np.asarray(tokens)[np.asarray(tokens) != 0] == CFG.pad_id)


def test_top_k_1_and_tiny_top_p_sampling_equal_greedy(params, greedy):
    tokens, scores = generate(
        params,
        CFG,
        ENC,
        DecodeConfig(max_decode_length=MAX_LEN, method="sample", top_k=1, num_decodes=2),
        rng=jax.random.key(5),
    )
    np.testing.assert_array_equal(tokens, np.repeat(greedy[0], 2, axis=1))
    np.testing.assert_allclose(scores, np.repeat(greedy[1], 2, axis=1), rtol=1e-6)
    tokens, _ = generate(
        params,
        CFG,
        ENC,
        DecodeConfig(max_decode_length=MAX_LEN, method="sample", top_p=1e-4, temperature=2.0),
    )
    np.testing.assert_array_equal(tokens, greedy[0])


def test_beam_size_1_equals_greedy_on_a_confident_model(params):
    # Sharper distributions: a finished short beam can no longer beat the greedy path.
    peaked = jax.tree.map(lambda x: x, params)
    peaked["decoder"]["logits_dense"]["kernel"] = params["decoder"]["logits_dense"]["kernel"] * 6.0
    want = generate(peaked, CFG, ENC, DecodeConfig(max_decode_length=MAX_LEN))
    got = generate(
        peaked,
        CFG,
        ENC,
        DecodeConfig(max_decode_length=MAX_LEN, method="beam", num_decodes=1, alpha=0.0),
    )
    np.testing.assert_array_equal(got[0], want[0])
    np.testing.assert_allclose(got[1], want[1], rtol=1e-5)


def test_num_decodes_samples_differ_and_are_reproducible(params):
    run = functools.partial(
        generate,
        params,
        CFG,
        ENC,
        decode=DecodeConfig(max_decode_length=MAX_LEN, method="sample", num_decodes=4),
    )
    tokens, scores = run(rng=jax.random.key(1))
    assert tokens.shape == (4, 4, MAX_LEN) and scores.shape == (4, 4)
    rows = {tuple(r) for r in np.asarray(tokens).reshape(-1, MAX_LEN)}
    assert len(rows) >= 10  # 16 samples of a random model are (almost all) distinct
    np.testing.assert_array_equal(run(rng=jax.random.key(1))[0], tokens)
    assert not np.array_equal(run(rng=jax.random.key(2))[0], tokens)
    for row in np.asarray(tokens).reshape(-1, MAX_LEN):  # EOS, then only padding
        ends = np.flatnonzero(row == CFG.eos_id)
        if ends.size:
            assert np.all(row[ends[0] + 1 :] == 0)


def test_beams_sorted_and_scores_match_scoring(params):
    alpha = 0.6
    tokens, scores = generate(
        params,
        CFG,
        ENC,
        DecodeConfig(max_decode_length=MAX_LEN, method="beam", num_decodes=3, alpha=alpha),
    )
    scores = np.asarray(scores)
    assert np.all(np.diff(scores, axis=1) <= 1e-6)  # best first
    targets = np.asarray(tokens).reshape(-1, MAX_LEN)
    batch = {
        "encoder_input_tokens": np.repeat(ENC, 3, axis=0),
        "decoder_input_tokens": np.pad(targets[:, :-1], ((0, 0), (1, 0))),
        "decoder_target_tokens": targets,
    }
    scored = score(params, CFG, batch)
    penalized = scored["sum_logprob"] / length_penalty(
        scored["num_tokens"].astype(np.float32), alpha
    )
    np.testing.assert_allclose(np.asarray(penalized).reshape(4, 3), scores, rtol=1e-5, atol=1e-5)


def test_scanned_dot_product_model_decodes_like_the_default(params, greedy):
    cfg = CFG.replace(scan_layers=True, attention_impl="dot_product")
    tokens, scores = generate(
        scan_params(params, CFG), cfg, ENC, DecodeConfig(max_decode_length=MAX_LEN)
    )
    np.testing.assert_array_equal(tokens, greedy[0])
    np.testing.assert_allclose(scores, greedy[1], rtol=1e-5, atol=1e-5)


def test_cross_attention_kv_are_cached_once(params):
    _, cache = jax.eval_shape(
        lambda p: prefill(p, CFG, jnp.asarray(ENC), None, MAX_LEN)[:2], params
    )
    layer = cache["decoder"]["layers_1"]
    heads, d_kv = CFG.num_heads, CFG.d_kv
    assert layer["encoder_decoder_attention"]["cached_key"].shape == (4, ENC.shape[1], heads, d_kv)
    assert layer["self_attention"]["cached_value"].shape == (4, MAX_LEN, heads, d_kv)

    def later_step(
        params, cache
    ):  # no encoder output at all: cross K/V can only come from the cache
        return Transformer(CFG).apply(
            {"params": params, "cache": cache},
            None,
            ENC,
            jnp.zeros((4, 1), jnp.int32),
            None,
            enable_dropout=False,
            decode=True,
            max_decode_length=MAX_LEN,
            mutable=["cache"],
            method=Transformer.decode,
        )

    logits, _ = jax.eval_shape(later_step, params, cache)
    assert logits.shape == (4, 1, CFG.vocab_size)


@pytest.mark.parametrize("impl", ["xla", "dot_product"])
def test_samples_share_one_cross_kv_and_decode_like_repeated_inputs(params, impl):
    cfg, n = CFG.replace(attention_impl=impl), 3
    _, cache = jax.eval_shape(
        lambda p: prefill(p, cfg, jnp.asarray(ENC), None, MAX_LEN)[:2], params
    )
    copies = jax.eval_shape(lambda c: _repeat_batch(c, n, keep_cross=True), cache)
    copies = copies["decoder"]["layers_0"]
    assert copies["encoder_decoder_attention"]["cached_key"].shape[0] == 4  # one per input
    assert copies["self_attention"]["cached_key"].shape[0] == 4 * n  # one per sample
    # Shared K/V give the samples that n explicit copies of every input (own K/V) give.
    sample = DecodeConfig(max_decode_length=MAX_LEN, method="sample")
    run = functools.partial(generate, params, cfg, rng=jax.random.key(5))
    shared = run(ENC, dataclasses.replace(sample, num_decodes=n))
    copied = run(np.repeat(ENC, n, axis=0), sample)
    np.testing.assert_array_equal(shared[0], np.asarray(copied[0]).reshape(4, n, MAX_LEN))
    np.testing.assert_allclose(shared[1], np.asarray(copied[1]).reshape(4, n), rtol=1e-5, atol=1e-5)


def fake_step(eos_at):
    """A 'model' that says token 5 until step `eos_at` (per row), then EOS; cache = step count."""

    def step(tokens, cache):
        logits = jnp.where(
            (cache >= eos_at)[:, None], jax.nn.one_hot(1, 8) * 10, jax.nn.one_hot(5, 8) * 10
        )
        return logits, cache + 1

    return step


def test_sample_loop_stops_when_every_sequence_ended():
    eos_at = jnp.array([2, 4])
    step = fake_step(eos_at)
    logits0, cache = step(None, jnp.zeros(2, jnp.int32))
    greedy = lambda logits, _: jnp.argmax(logits, -1).astype(jnp.int32)
    tokens, _, steps = jax.jit(
        lambda lg, c: sample_loop(step, lg, c, jax.random.key(0), 10, 1, 0, greedy)
    )(logits0, cache)
    np.testing.assert_array_equal(
        tokens, [[5, 5, 1, 0, 0, 0, 0, 0, 0, 0], [5, 5, 5, 5, 1, 0, 0, 0, 0, 0]]
    )
    assert int(steps) == 5  # not 10


def test_beam_search_stops_early_and_pads_after_eos():
    step = fake_step(jnp.array([1, 1, 3, 3]))  # batch 2 x 2 beams
    logits0, cache = step(None, jnp.zeros(4, jnp.int32))
    tokens, scores, steps = jax.jit(lambda lg, c: beam_search(step, lg, c, 2, 2, 12, 1, 0, 0.6))(
        logits0, cache
    )
    np.testing.assert_array_equal(tokens[:, 0], [[5, 1] + [0] * 10, [5, 5, 5, 1] + [0] * 8])
    assert int(steps) < 12
    assert np.all(np.diff(np.asarray(scores), axis=1) <= 0)


def test_sample_token_respects_top_k_and_temperature():
    logits = jnp.tile(jnp.array([[0.0, 3.0, 2.9, 1.0, -1.0]]), (4000, 1))
    keys = jax.random.key(0)
    drawn = np.asarray(sample_token(logits, keys, temperature=jnp.float32(1.0), top_k=2))
    assert set(np.unique(drawn)) == {1, 2}
    cold = np.asarray(sample_token(logits, keys, temperature=jnp.float32(0.01)))
    assert set(np.unique(cold)) == {1}
    nucleus = np.asarray(
        sample_token(logits, keys, temperature=jnp.float32(1.0), top_p=jnp.float32(0.9))
    )
    assert set(np.unique(nucleus)) <= {1, 2, 3}


def test_bad_arguments_raise(params):
    with pytest.raises(ValueError, match="method"):
        generate(params, CFG, ENC, DecodeConfig(max_decode_length=4, method="nucleus"))
    with pytest.raises(ValueError, match="beam size"):
        generate(params, CFG, ENC, DecodeConfig(max_decode_length=4, method="beam", num_decodes=9))
