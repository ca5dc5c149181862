"""Autoregressive decoding: greedy, temperature sampling (top-k / top-p) and beam search.

The encoder runs once; the first decoder step (on the un-expanded batch) creates the cache,
including the cross-attention keys/values, which later steps only read. Sample/beam copies
repeat the self-attention cache but share the cross-attention K/V (one copy per input; the
attention groups each input's copies), then a `lax.while_loop` feeds one token per step and stops
as soon as every sequence has ended.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp

from scicot_jax.model.config import T5Config
from scicot_jax.model.scan import unscan_params
from scicot_jax.model.t5 import Transformer

NEG_INF = -1.0e9  # finite, so sums and differences never turn into NaN
METHODS = ("greedy", "sample", "beam")

# step(tokens_N, cache) -> (logits_NxV fp32, cache)
StepFn = Callable[[jax.Array, Any], tuple[jax.Array, Any]]
ChooseFn = Callable[[jax.Array, jax.Array], jax.Array]


@dataclasses.dataclass(frozen=True)
class DecodeConfig:
    """How to decode (infer's `DecodeConfig.*`, gin macros DECODE_METHOD, NUM_DECODES,
    TEMPERATURE): the method, outputs per input, sampling truncation, beam length penalty."""

    method: str = "greedy"  # "greedy" | "sample" | "beam"
    num_decodes: int = 1  # samples or beams per input
    temperature: float = 1.0  # sample: logits / temperature
    top_k: int = 0  # sample: keep the k likeliest tokens (0: all)
    top_p: float = 1.0  # sample: keep the nucleus of this mass (1.0: all)
    alpha: float = 0.6  # beam: t5x's length penalty ((5 + len) / 6) ** alpha
    max_decode_length: int | None = None  # new tokens; None: the caller's targets length
    seed: int = 0  # sample: batch k draws from fold_in(key(seed), k)

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise ValueError(f"DecodeConfig.method={self.method!r}; expected one of {METHODS}")
        for name in ("num_decodes", "max_decode_length"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise ValueError(f"DecodeConfig.{name}={value}; must be >= 1")
        if self.top_k < 0 or not 0.0 < self.top_p <= 1.0 or self.temperature < 0:
            raise ValueError(
                f"DecodeConfig: top_k={self.top_k} (>= 0), top_p={self.top_p} (in (0, 1]) and "
                f"temperature={self.temperature} (>= 0) out of range"
            )

    def with_length(self, default: int) -> DecodeConfig:
        """This config with max_decode_length set (to `default` when it is None)."""
        return dataclasses.replace(self, max_decode_length=self.max_decode_length or default)


def generate(
    params: Any,
    config: T5Config,
    encoder_input_tokens: jax.Array,
    decode: DecodeConfig,
    *,
    rng: jax.Array | None = None,
    encoder_segment_ids: jax.Array | None = None,
    vocab_size: int | None = None,
) -> tuple[jax.Array, jax.Array]:
    """Decode `decode.num_decodes` outputs per input: tokens int32 [B, n, max_len] and scores
    fp32 [B, n]; `rng` defaults to key(decode.seed).

    `vocab_size`: the vocabulary's pieces; an embedding with more rows (rounded up, e.g. T5's
    32,128 for 32,100 pieces) never emits, nor gives probability to, the ids beyond it.
    The padding id is never emitted, so tokens end with EOS then padding 0 (unless cut at
    max_decode_length). Scores: greedy and
    sample give the sum of the model's log-probabilities (temperature 1, no truncation) of the
    emitted tokens; beam gives that sum divided by the t5x length penalty ((5 + len) / 6) ** alpha,
    beams sorted best first.
    """
    if decode.max_decode_length is None:
        raise ValueError("generate: DecodeConfig.max_decode_length is not set")
    if decode.method == "beam" and 2 * decode.num_decodes > config.vocab_size:
        raise ValueError(
            f"generate: beam size {decode.num_decodes} needs vocab_size >= {2 * decode.num_decodes}"
        )
    rng = jax.random.key(decode.seed) if rng is None else rng
    return _generate(
        params,
        encoder_input_tokens,
        encoder_segment_ids,
        jnp.float32(decode.temperature),
        jnp.float32(decode.top_p),
        jnp.float32(decode.alpha),
        rng,
        config=config,
        max_len=decode.max_decode_length,
        method=decode.method,
        num_decodes=decode.num_decodes,
        top_k=int(decode.top_k),
        use_top_p=decode.top_p < 1.0,
        vocab_size=vocab_size if vocab_size and vocab_size < config.vocab_size else None,
    )


@functools.partial(
    jax.jit,
    static_argnames=(
        "config",
        "max_len",
        "method",
        "num_decodes",
        "top_k",
        "use_top_p",
        "vocab_size",
    ),
)
def _generate(
    params: Any,
    enc_tokens: jax.Array,
    enc_segments: jax.Array | None,
    temperature: jax.Array,
    top_p: jax.Array,
    alpha: jax.Array,
    rng: jax.Array,
    *,
    config: T5Config,
    max_len: int,
    method: str,
    num_decodes: int,
    top_k: int,
    use_top_p: bool,
    vocab_size: int | None = None,
) -> tuple[jax.Array, jax.Array]:
    if config.scan_layers:  # decode caches are per layer; run the per-layer twin of the model
        params, config = unscan_params(params, config), config.replace(scan_layers=False)
    first_logits, cache, run = prefill(params, config, enc_tokens, enc_segments, max_len)
    if vocab_size is not None:  # rows beyond the vocabulary: never chosen, no probability
        first_logits, run = mask_beyond(first_logits, vocab_size), _masked(run, vocab_size)
    batch = enc_tokens.shape[0]
    # Copies for samples / beams: own self-attention caches, one shared cross-attention K/V.
    first_logits, enc_tokens = _repeat_batch((first_logits, enc_tokens), num_decodes)
    cache = _repeat_batch(cache, num_decodes, keep_cross=True)
    step = lambda tokens_N, cache: run(tokens_N, cache, None, enc_tokens)
    if method == "beam":
        tokens, scores, _ = beam_search(
            step,
            first_logits,
            cache,
            batch,
            num_decodes,
            max_len,
            config.eos_id,
            config.pad_id,
            alpha,
        )
        return tokens, scores
    if method == "greedy":
        choose = lambda logits, _: jnp.argmax(logits, axis=-1).astype(jnp.int32)
    else:
        choose = functools.partial(
            sample_token, temperature=temperature, top_k=top_k, top_p=top_p if use_top_p else None
        )
    tokens, scores, _ = sample_loop(
        step, first_logits, cache, rng, max_len, config.eos_id, config.pad_id, choose
    )
    return tokens.reshape(batch, num_decodes, max_len), scores.reshape(batch, num_decodes)


def prefill(
    params: Any,
    config: T5Config,
    enc_tokens: jax.Array,
    enc_segments: jax.Array | None,
    max_len: int,
) -> tuple[jax.Array, Any, Callable]:
    """Encode once and run decoder step 0, which creates the cache; return (logits, cache, run).

    `run(tokens_N, cache, encoded, enc_tokens)` is one decoder step; once the cache exists the
    cross-attention reads its cached K/V, so later steps pass encoded=None.
    """
    model = Transformer(config)
    encoded = model.apply(
        {"params": params},
        enc_tokens,
        enc_segments,
        enable_dropout=False,
        method=Transformer.encode,
    )

    def run(tokens_N, cache, encoded, enc_tokens):
        variables = {"params": params} if cache is None else {"params": params, "cache": cache}
        logits, state = model.apply(
            variables, encoded, enc_tokens, tokens_N[:, None], None,
            enable_dropout=False, decode=True, max_decode_length=max_len, mutable=["cache"], method=Transformer.decode,
        )  # fmt: skip
        return logits[:, 0].astype(jnp.float32), state["cache"]

    start = jnp.full((enc_tokens.shape[0],), config.decoder_start_id, jnp.int32)
    first_logits, cache = run(start, None, encoded, enc_tokens)
    return first_logits, cache, run


def mask_beyond(logits_NxV: jax.Array, vocab_size: int) -> jax.Array:
    """Logits of ids >= vocab_size (embedding rows with no piece) set to NEG_INF."""
    return jnp.where(jnp.arange(logits_NxV.shape[-1]) < vocab_size, logits_NxV, NEG_INF)


def _masked(run: Callable, vocab_size: int) -> Callable:
    def masked_run(*args):
        logits, cache = run(*args)
        return mask_beyond(logits, vocab_size), cache

    return masked_run


def _repeat_batch(tree: Any, n: int, keep_cross: bool = False) -> Any:
    """Repeat every batched leaf n times along axis 0 (scalars such as the decode index stay;
    with keep_cross, so do cross-attention caches, which the copies share)."""
    if n == 1:
        return tree

    def rep(path: tuple, x: jax.Array) -> jax.Array:
        keep = x.ndim == 0 or (keep_cross and _is_cross(path))
        return x if keep else jnp.repeat(x, n, axis=0)

    return jax.tree_util.tree_map_with_path(rep, tree)


def _is_cross(path: tuple) -> bool:
    """Whether a cache leaf belongs to a cross-attention block (same for every copy of an input)."""
    return any(getattr(key, "key", None) == "encoder_decoder_attention" for key in path)


def sample_token(
    logits_NxV: jax.Array,
    rng: jax.Array,
    *,
    temperature: jax.Array,
    top_k: int = 0,
    top_p: jax.Array | None = None,
) -> jax.Array:
    """Sample from softmax(logits / temperature) restricted to the top-k and the top-p nucleus."""
    logits = logits_NxV / jnp.maximum(temperature, 1e-6)
    if top_k > 0:
        kth = jax.lax.top_k(logits, top_k)[0][:, -1:]
        logits = jnp.where(logits >= kth, logits, NEG_INF)
    if top_p is not None:
        sorted_desc = -jnp.sort(-logits, axis=-1)
        probs = jax.nn.softmax(sorted_desc, axis=-1)
        keep = (jnp.cumsum(probs, axis=-1) - probs) < top_p  # the top token is always kept
        threshold = jnp.min(jnp.where(keep, sorted_desc, jnp.inf), axis=-1, keepdims=True)
        logits = jnp.where(logits >= threshold, logits, NEG_INF)
    return jax.random.categorical(rng, logits, axis=-1).astype(jnp.int32)


def sample_loop(
    step: StepFn,
    first_logits_NxV: jax.Array,
    cache: Any,
    rng: jax.Array,
    max_len: int,
    eos_id: int,
    pad_id: int,
    choose: ChooseFn,
) -> tuple[jax.Array, jax.Array, jax.Array]:
    """Greedy/sampling loop: (tokens [N, max_len], sum log-prob [N], steps run)."""
    n = first_logits_NxV.shape[0]

    def cond(state):
        i, _, _, _, ended, _, _ = state
        return (i < max_len) & ~jnp.all(ended)

    def body(state):
        i, tokens, logits, cache, ended, logprob, rng = state
        rng, sub = jax.random.split(rng)
        token = jnp.where(ended, pad_id, choose(_forbid(logits, pad_id), sub))
        token_lp = jnp.take_along_axis(jax.nn.log_softmax(logits), token[:, None], axis=-1)[:, 0]
        logprob = logprob + jnp.where(ended, 0.0, token_lp)
        tokens = jax.lax.dynamic_update_slice(tokens, token[:, None], (0, i))
        ended = ended | (token == eos_id)
        logits, cache = step(token, cache)
        return i + 1, tokens, logits, cache, ended, logprob, rng

    state = (
        jnp.int32(0),
        jnp.full((n, max_len), pad_id, jnp.int32),
        first_logits_NxV,
        cache,
        jnp.zeros((n,), bool),
        jnp.zeros((n,), jnp.float32),
        rng,
    )
    steps, tokens, _, _, _, logprob, _ = jax.lax.while_loop(cond, body, state)
    return tokens, logprob, steps


def _forbid(logits_NxV: jax.Array, token_id: int) -> jax.Array:
    """Never emit `token_id` (padding): outputs stay "tokens, EOS, then padding"."""
    return logits_NxV.at[:, token_id].set(NEG_INF)


def length_penalty(length: jax.Array, alpha: jax.Array) -> jax.Array:
    """t5x / GNMT brevity penalty ((5 + length) / 6) ** alpha."""
    return ((5.0 + length) / 6.0) ** alpha


def _gather_beams(x: jax.Array, idx_BxM: jax.Array) -> jax.Array:
    """x [B, K, ...] -> [B, M, ...] picking beams idx per batch row."""
    idx = idx_BxM.reshape(idx_BxM.shape + (1,) * (x.ndim - 2))
    return jnp.take_along_axis(x, idx, axis=1)


def _reorder_beam_cache(cache: Any, flat_idx_N: jax.Array) -> Any:
    """Gather the cache rows of surviving beams; cross-attention K/V (equal per input) and scalars stay."""

    def pick(path: tuple, x: jax.Array) -> jax.Array:
        return x if _is_cross(path) or x.ndim == 0 else jnp.take(x, flat_idx_N, axis=0)

    return jax.tree_util.tree_map_with_path(pick, cache)


def beam_search(
    step: StepFn,
    first_logits_NxV: jax.Array,
    cache: Any,
    batch: int,
    beams: int,
    max_len: int,
    eos_id: int,
    pad_id: int,
    alpha: jax.Array,
) -> tuple[jax.Array, jax.Array, jax.Array]:
    """Beam search over a cache of batch * beams rows: (tokens [B, K, L], scores [B, K], steps run).

    Candidates that emit EOS, and every candidate at the last position, join the finished set
    scored logprob / length_penalty; the loop stops once no live beam can beat the worst
    finished one (t5x's criterion).
    """
    vocab = first_logits_NxV.shape[-1]
    k = beams

    def cond(state):
        i, _, alive_lp, _, fin_scores, fin_flags, _, _ = state
        best_alive = alive_lp[:, 0] / length_penalty(jnp.float32(max_len), alpha)
        worst_fin = jnp.where(jnp.all(fin_flags, axis=1), jnp.min(fin_scores, axis=1), NEG_INF)
        return (i < max_len) & ~jnp.all(worst_fin > best_alive)

    def body(state):
        i, alive_seqs, alive_lp, fin_seqs, fin_scores, fin_flags, logits, cache = state
        lp_BxKxV = _forbid(jax.nn.log_softmax(logits), pad_id).reshape(batch, k, vocab)
        cand_BxKV = (alive_lp[:, :, None] + lp_BxKxV).reshape(batch, k * vocab)
        top_lp, top_idx = jax.lax.top_k(cand_BxKV, 2 * k)
        parent, token = top_idx // vocab, (top_idx % vocab).astype(jnp.int32)
        seqs = _gather_beams(alive_seqs, parent)
        seqs = jax.lax.dynamic_update_slice(seqs, token[:, :, None], (0, 0, i))
        # Finished: EOS now, or forced at the last position.
        ends = (token == eos_id) | (i == max_len - 1)
        new_scores = jnp.where(
            ends, top_lp / length_penalty((i + 1).astype(jnp.float32), alpha), NEG_INF
        )
        pool_scores = jnp.concatenate([fin_scores, new_scores], axis=1)
        fin_scores, pick = jax.lax.top_k(pool_scores, k)
        fin_seqs = _gather_beams(jnp.concatenate([fin_seqs, seqs], axis=1), pick)
        fin_flags = _gather_beams(jnp.concatenate([fin_flags, ends], axis=1), pick)
        # Alive: the best k candidates that did not emit EOS.
        alive_lp, pick = jax.lax.top_k(jnp.where(token == eos_id, NEG_INF, top_lp), k)
        alive_seqs = _gather_beams(seqs, pick)
        flat_parent = (jnp.arange(batch)[:, None] * k + _gather_beams(parent, pick)).reshape(-1)
        cache = _reorder_beam_cache(cache, flat_parent)
        logits, cache = step(_gather_beams(token, pick).reshape(-1), cache)
        return i + 1, alive_seqs, alive_lp, fin_seqs, fin_scores, fin_flags, logits, cache

    # Only beam 0 is live at the start, so the first expansion does not pick duplicates.
    alive_lp = jnp.tile(jnp.array([0.0] + [NEG_INF] * (k - 1), jnp.float32), (batch, 1))
    seqs = jnp.zeros((batch, k, max_len), jnp.int32)
    state = (
        jnp.int32(0),
        seqs,
        alive_lp,
        seqs,
        jnp.full((batch, k), NEG_INF, jnp.float32),
        jnp.zeros((batch, k), bool),
        first_logits_NxV,
        cache,
    )
    steps, _, _, fin_seqs, fin_scores, _, _, _ = jax.lax.while_loop(cond, body, state)
    return fin_seqs, fin_scores, steps
