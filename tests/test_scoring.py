"""Scoring: per-example sum / mean target log-likelihood."""

import jax
import numpy as np
import pytest

from scicot_jax.model import T5Config, Transformer, init_params
from scicot_jax.model.scoring import score

CFG = T5Config.preset("tiny", vocab_size=96, dtype="float32")


def make_batch():
    targets = np.array([[7, 8, 9, 1, 0], [3, 1, 0, 0, 0], [5, 6, 7, 8, 1]], np.int32)
    return {
        "encoder_input_tokens": np.array([[4, 5, 1, 0], [9, 9, 9, 1], [2, 1, 0, 0]], np.int32),
        "decoder_input_tokens": np.pad(targets[:, :-1], ((0, 0), (1, 0))),
        "decoder_target_tokens": targets,
    }


def test_score_matches_manual_log_likelihood():
    params = init_params(CFG, jax.random.key(2))
    batch = make_batch()
    got = {k: np.asarray(v) for k, v in score(params, CFG, batch).items()}
    logits = np.asarray(
        Transformer(CFG).apply({"params": params}, **batch, enable_dropout=False), np.float64
    )
    logprobs = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
    targets = batch["decoder_target_tokens"]
    token_lp = np.take_along_axis(logprobs, targets[..., None], -1)[..., 0] * (targets != 0)
    np.testing.assert_array_equal(got["num_tokens"], [4, 2, 5])
    np.testing.assert_allclose(got["sum_logprob"], token_lp.sum(-1), rtol=1e-5)
    np.testing.assert_allclose(got["mean_logprob"], token_lp.sum(-1) / [4, 2, 5], rtol=1e-5)
    assert np.all(got["sum_logprob"] < 0)
    # An example's score does not depend on what else is in the batch.
    shuffled = score(params, CFG, {k: v[[2, 0, 1]] for k, v in batch.items()})
    np.testing.assert_allclose(shuffled["sum_logprob"], got["sum_logprob"][[2, 0, 1]], rtol=1e-5)


def test_missing_feature_is_named():
    batch = make_batch()
    del batch["decoder_input_tokens"]
    with pytest.raises(ValueError, match="decoder_input_tokens"):
        score({}, CFG, batch)
