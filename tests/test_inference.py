"""Length-bucketed, pipelined inference: same greedy outputs and scores as full-length padding."""

import jax
import numpy as np
import pytest
from model_fixtures import tiny_config

from scicot_jax.data.tokens import pad_rows
from scicot_jax.model import init_params
from scicot_jax.model.decoding import DecodeConfig, generate
from scicot_jax.model.scoring import score as score_fn
from scicot_jax.model.t5 import Transformer
from scicot_jax.runtime import inference
from scicot_jax.runtime import partitioning as part

CFG = tiny_config(dtype="float32")
IN_LEN, TGT_LEN, MAX_DECODE, BATCH = 16, 12, 10, 4


def mixed_rows(n: int, max_len: int, seed: int) -> list[list[int]]:
    """Token lists of very different lengths (1 .. max_len + 5, so some are truncated), EOS last."""
    rng = np.random.default_rng(seed)
    lens = rng.integers(0, max_len + 5, n)
    return [list(rng.integers(2, CFG.vocab_size, k)) + [1] for k in lens]


@pytest.fixture(scope="module")
def setup():
    params = init_params(CFG, jax.random.key(3))
    return params, part.make_mesh(), mixed_rows(11, IN_LEN, 0), mixed_rows(11, TGT_LEN, 1)


def test_plan_batches_buckets_sorts_and_fills():
    lengths = [3, 40, 9, 17, 1, 33, 8]
    batches = inference.plan_batches([lengths], [36], 3)
    # Longest first; each batch padded to its longest row's bucket, capped at 36.
    assert [b.rows for b in batches] == [(1, 5, 3), (2, 6, 0), (4, 4, 4)]
    assert [b.lengths for b in batches] == [(36,), (10,), (8,)]
    assert [b.size for b in batches] == [3, 3, 1]  # the last batch repeats its row as filler
    assert sorted(i for b in batches for i in b.rows[: b.size]) == list(range(len(lengths)))


def test_buckets_pad_at_most_a_quarter_in_four_shapes_per_doubling():
    lengths = {n: inference.bucket_length(n, 1 << 20) for n in range(1, 4097)}
    assert all(n <= b <= max(8, 1.25 * n) for n, b in lengths.items())
    for k in range(3, 12):  # each doubling (2^k, 2^(k+1)]: at most four padded lengths
        assert len({lengths[n] for n in range((1 << k) + 1, (2 << k) + 1)}) <= 4
    assert (lengths[87], lengths[93], lengths[178]) == (96, 96, 192)  # compass-like clusters


def test_run_pipelined_dispatches_next_before_fetching_and_keeps_order():
    events = []
    batches = inference.plan_batches([[5, 20, 9, 30]], [32], 2)

    def dispatch(k, batch):
        events.append(("dispatch", k))
        return np.array(batch.rows)

    def unpack(batch, host):
        events.append(("fetch", batch.rows))
        return [f"row{i}" for i in host[: batch.size]]

    out = inference.run_pipelined(batches, dispatch, unpack)
    assert out == ["row0", "row1", "row2", "row3"]
    assert events == [("dispatch", 0), ("dispatch", 1), ("fetch", (3, 1)), ("fetch", (2, 0))]


def test_greedy_predict_matches_full_length_padding(setup):
    params, mesh, inputs, _ = setup
    decode = DecodeConfig(max_decode_length=MAX_DECODE)
    got = inference.predict(
        params, CFG, mesh, inputs, input_length=IN_LEN, decode=decode, batch_size=BATCH
    )
    # The old path: every row padded to input_length, batches in the caller's order.
    toks, scores = [], []
    for start in range(0, len(inputs), BATCH):
        enc = pad_rows(inputs[start : start + BATCH] + [[]] * BATCH, IN_LEN, 0)[:BATCH]
        t, s = jax.device_get(generate(params, CFG, enc, decode))
        toks.append(t)
        scores.append(s)
    toks, scores = np.concatenate(toks), np.concatenate(scores)
    assert len(got) == len(inputs)
    for j, (g_toks, g_scores) in enumerate(got):
        assert g_toks == [inference._cut(toks[j, 0], CFG.eos_id, CFG.pad_id)]
        np.testing.assert_allclose(g_scores, scores[j], rtol=1e-5, atol=1e-5)
    assert len({len(t[0]) for t, _ in got}) > 1  # the set really mixes output lengths


def test_score_matches_full_length_padding(setup):
    params, mesh, inputs, targets = setup
    got = inference.score(
        params,
        CFG,
        mesh,
        inputs,
        targets,
        input_length=IN_LEN,
        target_length=TGT_LEN,
        batch_size=BATCH,
    )
    ref = {}  # the old path: full-length padding, batches in the caller's order
    for start in range(0, len(inputs), BATCH):
        tgt = pad_rows(targets[start : start + BATCH] + [[]] * BATCH, TGT_LEN, 0)[:BATCH]
        enc = pad_rows(inputs[start : start + BATCH] + [[]] * BATCH, IN_LEN, 0)[:BATCH]
        batch = {
            "encoder_input_tokens": enc,
            "decoder_input_tokens": np.pad(tgt[:, :-1], ((0, 0), (1, 0))),
            "decoder_target_tokens": tgt,
        }
        for k, v in jax.device_get(score_fn(params, CFG, batch)).items():
            ref.setdefault(k, []).extend(v[: len(inputs) - start])
    ref = {k: np.array(v) for k, v in ref.items()}
    assert [r["num_tokens"] for r in got] == ref["num_tokens"].tolist()
    for key in ("sum_logprob", "mean_logprob"):
        np.testing.assert_allclose([r[key] for r in got], ref[key], rtol=1e-5, atol=1e-5)


def test_ids_beyond_the_vocabulary_are_never_emitted_nor_scored(setup):
    """An embedding with more rows than the vocabulary has pieces (T5's 32,128 for 32,100): greedy,
    sampling and beam emit only ids < vocab_size, and scoring normalises over those ids."""
    params, mesh, _, _ = setup
    pieces = 6
    rng = np.random.default_rng(0)  # one batch of one shape: one compile per method
    inputs = [list(rng.integers(2, pieces, 7)) + [1] for _ in range(BATCH)]
    targets = [list(rng.integers(2, pieces, 5)) + [1] for _ in range(BATCH)]

    def emitted(method, vocab_size=None):
        decode = DecodeConfig(method, num_decodes=2, max_decode_length=MAX_DECODE)
        outs = inference.predict(
            params,
            CFG,
            mesh,
            inputs,
            input_length=IN_LEN,
            decode=decode,
            batch_size=BATCH,
            vocab_size=vocab_size,
        )
        return {t for toks, _ in outs for seq in toks for t in seq}

    for method in ("sample", "beam"):  # greedy shares the sampling loop (argmax chooser)
        assert max(emitted(method)) >= pieces, method  # the random model picks them
        assert max(emitted(method, vocab_size=pieces)) < pieces, method
    kw = dict(input_length=IN_LEN, target_length=TGT_LEN, batch_size=BATCH)
    full = inference.score(params, CFG, mesh, inputs, targets, **kw)
    own = inference.score(params, CFG, mesh, inputs, targets, vocab_size=pieces, **kw)
    # the same targets, a softmax over fewer ids: every target token is more likely
    assert all(o["sum_logprob"] > f["sum_logprob"] for o, f in zip(own, full) if f["num_tokens"])
    batch = {
        "encoder_input_tokens": pad_rows(inputs[:1], IN_LEN, 0),
        "decoder_input_tokens": np.pad(pad_rows(targets[:1], TGT_LEN, 0)[:, :-1], ((0, 0), (1, 0))),
        "decoder_target_tokens": pad_rows(targets[:1], TGT_LEN, 0),
    }
    logits = Transformer(CFG).apply({"params": params}, *batch.values(), enable_dropout=False)
    logits = np.asarray(logits)[..., :pieces]
    tgt = batch["decoder_target_tokens"][0]
    lp = jax.nn.log_softmax(logits[0], axis=-1)[np.arange(len(tgt)), tgt]
    np.testing.assert_allclose(own[0]["sum_logprob"], float(lp[tgt != 0].sum()), rtol=1e-5)
