"""T5 v1.1 / Flan-T5 encoder-decoder in Flax linen with t5x's parameter tree and call signature."""

from __future__ import annotations

import functools
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from scicot_jax.model.attention import MultiHeadAttention, make_attention_mask, make_segment_mask
from scicot_jax.model.config import T5Config
from scicot_jax.model.layers import MLP_KERNEL_INIT, Dense, Embed, MlpBlock, RMSNorm, constrain
from scicot_jax.model.relpos import RelativePositionBiases

_REMAT_POLICIES = {
    "full": None,  # save nothing, recompute the whole layer in the backward pass
    "dots": jax.checkpoint_policies.dots_with_no_batch_dims_saveable,  # keep projections, not scores
}


def _dropout(cfg: T5Config, x: jax.Array, deterministic: bool) -> jax.Array:
    """t5x-style dropout, shared over the sequence axis."""
    return nn.Dropout(cfg.dropout_rate, broadcast_dims=(-2,))(x, deterministic=deterministic)


class EncoderLayer(nn.Module):
    """Pre-norm self-attention + gated-GELU MLP block."""

    config: T5Config
    deterministic: bool = True

    @nn.compact
    def __call__(self, x: jax.Array, bias: jax.Array, mask: jax.Array) -> Any:
        cfg, det = self.config, self.deterministic
        h = RMSNorm(cfg, name="pre_attention_layer_norm")(x)
        h = MultiHeadAttention(cfg, deterministic=det, name="attention")(h, h, bias, mask)
        x = x + _dropout(cfg, h, det)
        h = RMSNorm(cfg, name="pre_mlp_layer_norm")(x)
        h = MlpBlock(cfg, deterministic=det, name="mlp")(h)
        x = constrain(x + _dropout(cfg, h, det), ("batch", "length", "embed"))
        return (x, None) if cfg.scan_layers else x


class DecoderLayer(nn.Module):
    """Pre-norm causal self-attention, cross-attention and MLP block."""

    config: T5Config
    deterministic: bool = True
    decode: bool = False
    max_decode_length: int | None = None

    @nn.compact
    def __call__(
        self,
        x: jax.Array,
        encoded: jax.Array,
        self_bias: jax.Array,
        self_mask: jax.Array,
        cross_mask: jax.Array,
        decode_index: jax.Array | None,
    ) -> Any:
        cfg, det = self.config, self.deterministic
        attn = functools.partial(MultiHeadAttention, cfg, deterministic=det, decode=self.decode)
        h = RMSNorm(cfg, name="pre_self_attention_layer_norm")(x)
        h = attn(name="self_attention")(
            h, h, self_bias, self_mask, decode_index, self.max_decode_length
        )
        x = x + _dropout(cfg, h, det)
        h = RMSNorm(cfg, name="pre_cross_attention_layer_norm")(x)
        h = attn(is_cross=True, name="encoder_decoder_attention")(h, encoded, None, cross_mask)
        x = x + _dropout(cfg, h, det)
        h = RMSNorm(cfg, name="pre_mlp_layer_norm")(x)
        h = MlpBlock(cfg, deterministic=det, name="mlp")(h)
        x = constrain(x + _dropout(cfg, h, det), ("batch", "length", "embed"))
        return (x, None) if cfg.scan_layers else x


def _run_layers(
    layer_cls: type[nn.Module],
    cfg: T5Config,
    num_layers: int,
    x: jax.Array,
    args: tuple,
    **fields: Any,
) -> jax.Array:
    """Apply `num_layers` layers as `layers_{i}` or, with scan_layers, one scanned `layers`."""
    if cfg.remat_policy != "none" and not fields.get("decode", False):
        layer_cls = nn.remat(
            layer_cls, policy=_REMAT_POLICIES[cfg.remat_policy], prevent_cse=not cfg.scan_layers
        )
    if cfg.scan_layers:
        scanned = nn.scan(
            layer_cls,
            variable_axes={"params": 0, "cache": 0},
            split_rngs={"params": True, "dropout": True},
            in_axes=(nn.broadcast,) * len(args),
            length=num_layers,
            metadata_params={nn.PARTITION_NAME: "layers"},
        )
        x, _ = scanned(cfg, name="layers", **fields)(x, *args)
        return x
    for i in range(num_layers):
        x = layer_cls(cfg, name=f"layers_{i}", **fields)(x, *args)
    return x


class Encoder(nn.Module):
    """Embedding, encoder layers sharing one bidirectional relpos_bias, final RMS norm."""

    config: T5Config
    shared_embedding: nn.Module

    @nn.compact
    def __call__(
        self,
        tokens_BxL: jax.Array,
        mask: jax.Array,
        deterministic: bool,
        embedded: jax.Array | None = None,
    ) -> jax.Array:
        cfg = self.config
        # Array positions suffice for packed rows: cross-segment pairs are masked, and within a
        # segment the distance is the same as in the segment alone.
        pos = jnp.arange(tokens_BxL.shape[-1])
        bias = RelativePositionBiases(cfg, bidirectional=True, name="relpos_bias")(pos, pos)
        if embedded is None:
            embedded = self.shared_embedding(tokens_BxL)
        x = _dropout(cfg, embedded, deterministic)
        x = constrain(x, ("batch", "length", "embed"))
        x = _run_layers(
            EncoderLayer, cfg, cfg.num_encoder_layers, x, (bias, mask), deterministic=deterministic
        )
        x = RMSNorm(cfg, name="encoder_norm")(x)
        return _dropout(cfg, x, deterministic)


class Decoder(nn.Module):
    """Embedding, decoder layers sharing one causal relpos_bias, final norm, untied logits_dense."""

    config: T5Config
    shared_embedding: nn.Module

    @nn.compact
    def __call__(
        self,
        encoded: jax.Array,
        tokens_BxL: jax.Array,
        self_mask: jax.Array | None,
        cross_mask: jax.Array,
        deterministic: bool,
        decode: bool = False,
        max_decode_length: int | None = None,
        embedded: jax.Array | None = None,
    ) -> jax.Array:
        cfg = self.config
        relpos = RelativePositionBiases(cfg, bidirectional=False, name="relpos_bias")
        decode_index = None
        if decode:
            if max_decode_length is None:
                raise ValueError("Transformer.decode(decode=True) needs max_decode_length")
            index = self.variable("cache", "decode_index", lambda: jnp.zeros((), jnp.int32))
            decode_index = index.value
            index.value = decode_index + 1
            key_pos = jnp.arange(max_decode_length)
            bias = relpos(decode_index[None], key_pos)  # [1, H, 1, max_len]
            self_mask = (key_pos <= decode_index)[None, None, None, :]
        else:
            pos = jnp.arange(tokens_BxL.shape[-1])
            bias = relpos(pos, pos)
        if embedded is None:
            embedded = self.shared_embedding(tokens_BxL)
        y = _dropout(cfg, embedded, deterministic)
        y = constrain(y, ("batch", "length", "embed"))
        y = _run_layers(
            DecoderLayer,
            cfg,
            cfg.num_decoder_layers,
            y,
            (encoded, bias, self_mask, cross_mask, decode_index),
            deterministic=deterministic,
            decode=decode,
            max_decode_length=max_decode_length,
        )
        y = _dropout(cfg, RMSNorm(cfg, name="decoder_norm")(y), deterministic)
        logits = Dense(
            cfg.vocab_size,
            ("embed", "vocab"),
            MLP_KERNEL_INIT,
            cfg,
            dtype=jnp.float32,
            kernel_grad_first=True,
            name="logits_dense",
        )(y)
        return constrain(logits, ("batch", "length", "vocab"))


class Transformer(nn.Module):
    """T5 v1.1 encoder-decoder; `__call__`, `encode` and `decode` follow t5x's Transformer."""

    config: T5Config

    def setup(self) -> None:
        self.token_embedder = Embed(self.config)
        self.encoder = Encoder(self.config, self.token_embedder)
        self.decoder = Decoder(self.config, self.token_embedder)

    def encode(
        self,
        encoder_input_tokens: jax.Array,
        encoder_segment_ids: jax.Array | None = None,
        enable_dropout: bool = True,
        embedded: jax.Array | None = None,
    ) -> jax.Array:
        """Encoder output [B, Le, d_model]; padding and other packed segments are masked."""
        ok = encoder_input_tokens != self.config.pad_id
        mask = make_attention_mask(ok, ok)
        if encoder_segment_ids is not None:
            mask &= make_segment_mask(encoder_segment_ids, encoder_segment_ids)
        return self.encoder(encoder_input_tokens, mask, not enable_dropout, embedded)

    def decode(
        self,
        encoded: jax.Array,
        encoder_input_tokens: jax.Array,
        decoder_input_tokens: jax.Array,
        decoder_target_tokens: jax.Array | None,
        encoder_segment_ids: jax.Array | None = None,
        decoder_segment_ids: jax.Array | None = None,
        decoder_positions: jax.Array | None = None,
        enable_dropout: bool = True,
        decode: bool = False,
        max_decode_length: int | None = None,
        embedded: jax.Array | None = None,
    ) -> jax.Array:
        """Logits [B, Ld, vocab] (fp32); with decode=True one cached step of length 1."""
        del decoder_positions  # relative attention uses array positions; see Encoder
        pad = self.config.pad_id
        enc_ok = encoder_input_tokens != pad
        if decode:
            if encoder_segment_ids is not None:
                raise ValueError("packed (segment id) inputs are not supported in decode mode")
            step_ok = jnp.ones(decoder_input_tokens.shape, bool)
            self_mask, cross_mask = None, make_attention_mask(step_ok, enc_ok)
        else:
            if decoder_target_tokens is None:
                raise ValueError("decoder_target_tokens is required unless decode=True")
            length = decoder_input_tokens.shape[-1]
            causal = jnp.tril(jnp.ones((length, length), bool))[None, None]
            tgt_ok = decoder_target_tokens != pad
            self_mask = causal & make_attention_mask(tgt_ok, tgt_ok)
            cross_mask = make_attention_mask(tgt_ok, enc_ok)
            if decoder_segment_ids is not None:
                self_mask &= make_segment_mask(decoder_segment_ids, decoder_segment_ids)
            if encoder_segment_ids is not None:
                if decoder_segment_ids is None:
                    raise ValueError("encoder_segment_ids given without decoder_segment_ids")
                cross_mask &= make_segment_mask(decoder_segment_ids, encoder_segment_ids)
        return self.decoder(
            encoded,
            decoder_input_tokens,
            self_mask,
            cross_mask,
            deterministic=not enable_dropout,
            decode=decode,
            max_decode_length=max_decode_length,
            embedded=embedded,
        )

    def _embed_both(self, enc_tokens: jax.Array, dec_tokens: jax.Array) -> tuple:
        """Encoder and decoder embeddings from one lookup of the shared table.

        The gradient of a lookup is a scatter-add into a zero table-sized float32 buffer; two
        lookups make two such buffers and then add them: three passes over a [vocab, d_model]
        float32 array a step (docs/step_speed.md, fix 5).
        """
        both = self.token_embedder(jnp.concatenate([enc_tokens, dec_tokens], axis=-1))
        return both[:, : enc_tokens.shape[-1]], both[:, enc_tokens.shape[-1] :]

    def __call__(
        self,
        encoder_input_tokens: jax.Array,
        decoder_input_tokens: jax.Array,
        decoder_target_tokens: jax.Array,
        encoder_segment_ids: jax.Array | None = None,
        decoder_segment_ids: jax.Array | None = None,
        encoder_positions: jax.Array | None = None,
        decoder_positions: jax.Array | None = None,
        enable_dropout: bool = True,
        decode: bool = False,
        max_decode_length: int | None = None,
    ) -> jax.Array:
        """Teacher-forced logits [B, Ld, vocab] in fp32."""
        del encoder_positions  # see Encoder: array positions give identical per-segment results
        enc_x = dec_y = None
        if not decode:
            enc_x, dec_y = self._embed_both(encoder_input_tokens, decoder_input_tokens)
        encoded = self.encode(encoder_input_tokens, encoder_segment_ids, enable_dropout, enc_x)
        return self.decode(
            encoded,
            encoder_input_tokens,
            decoder_input_tokens,
            decoder_target_tokens,
            encoder_segment_ids,
            decoder_segment_ids,
            decoder_positions,
            enable_dropout,
            decode,
            max_decode_length,
            dec_y,
        )


_DEFAULT_SHAPES = {"encoder": (1, 8), "decoder": (1, 8)}


def _init_boxed(config: T5Config, rng: jax.Array, enc_shape: tuple, dec_shape: tuple) -> dict:
    enc, dec = jnp.ones(enc_shape, jnp.int32), jnp.ones(dec_shape, jnp.int32)
    return Transformer(config).init(rng, enc, dec, dec, enable_dropout=False)


_jit_init_boxed = jax.jit(_init_boxed, static_argnums=(0, 2, 3))


def init_params(
    config: T5Config, rng: jax.Array, batch_shapes: dict[str, tuple[int, int]] | None = None
) -> dict:
    """Randomly initialised params (plain nested dict, logical-axis boxes removed), t5x-style init."""
    shapes = batch_shapes or _DEFAULT_SHAPES
    boxed = _jit_init_boxed(config, rng, tuple(shapes["encoder"]), tuple(shapes["decoder"]))
    return nn.meta.unbox(boxed)["params"]


def _abstract_boxed(config: T5Config) -> dict:
    shapes = (_DEFAULT_SHAPES["encoder"], _DEFAULT_SHAPES["decoder"])
    return jax.eval_shape(lambda rng: _init_boxed(config, rng, *shapes), jax.random.key(0))


def logical_axes(config: T5Config) -> Any:
    """Params-shaped pytree of PartitionSpecs holding logical axis names (e.g. ('embed', 'mlp'))."""
    return nn.get_partition_spec(_abstract_boxed(config))["params"]


def param_shapes(config: T5Config) -> Any:
    """Params-shaped pytree of jax.ShapeDtypeStruct, without allocating anything."""
    return nn.meta.unbox(_abstract_boxed(config))["params"]


def num_params(config: T5Config) -> int:
    """Total parameter count of a config."""
    return sum(int(x.size) for x in jax.tree.leaves(param_shapes(config)))
