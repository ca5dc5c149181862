"""Train state (step, params, optimizer state) and how the model plugs into the step."""

from __future__ import annotations

import dataclasses
import importlib.util
from collections.abc import Callable
from typing import Any

import flax.struct
import jax
import jax.numpy as jnp


@flax.struct.dataclass
class TrainState:
    """Everything the step updates; dropout RNG is derived from (seed, step), so not stored."""

    step: jax.Array
    params: Any
    opt_state: Any


@dataclasses.dataclass(frozen=True)
class ModelSpec:
    """What the trainer needs from a model; `t5_spec` builds it for our Transformer.

    apply(params, batch, rng, enable_dropout) -> float32 logits [B, L_dec, V].
    init(rng) -> params. logical_axes: pytree of logical PartitionSpecs matching params.
    flops_per_example(input_len, target_len) -> training FLOPs of one example (or None).
    """

    apply: Callable[..., jax.Array]
    init: Callable[[jax.Array], Any]
    logical_axes: Any
    flops_per_example: Callable[[int, int], float] | None = None
    config: Any = None


def t5_spec(config: Any, feature_lengths: dict[str, int] | None = None) -> ModelSpec:
    """ModelSpec for scicot_jax.model.Transformer with the given T5Config."""
    from scicot_jax.model import Transformer, init_params
    from scicot_jax.model import logical_axes as logical_axes_fn

    lengths = dict(feature_lengths or {"inputs": 8, "targets": 8})
    module = Transformer(config)

    def apply(params: Any, batch: dict, rng: jax.Array | None, enable_dropout: bool) -> jax.Array:
        return module.apply(
            {"params": params},
            batch["encoder_input_tokens"],
            batch["decoder_input_tokens"],
            batch["decoder_target_tokens"],
            encoder_segment_ids=batch.get("encoder_segment_ids"),
            decoder_segment_ids=batch.get("decoder_segment_ids"),
            encoder_positions=batch.get("encoder_positions"),
            decoder_positions=batch.get("decoder_positions"),
            enable_dropout=enable_dropout,
            rngs={"dropout": rng} if enable_dropout and rng is not None else None,
        )

    def init(rng: jax.Array) -> Any:
        shapes = {"encoder": (1, lengths["inputs"]), "decoder": (1, lengths["targets"])}
        return init_params(config, rng, batch_shapes=shapes)

    def flops(input_len: int, target_len: int) -> float:
        from scicot_jax.model import flops as flops_lib

        return float(flops_lib.flops_per_example(config, input_len, target_len, training=True))

    # MFU needs the model's FLOP count; without scicot_jax.model.flops only tokens/s is logged.
    has_flops = importlib.util.find_spec("scicot_jax.model.flops") is not None
    return ModelSpec(
        apply=apply,
        init=init,
        logical_axes=logical_axes_fn(config),
        flops_per_example=flops if has_flops else None,
        config=config,
    )


def abstract_like(tree: Any, shardings: Any | None = None) -> Any:
    """ShapeDtypeStructs for a pytree (with shardings attached when given)."""
    if shardings is None:
        return jax.tree.map(lambda x: jax.ShapeDtypeStruct(jnp.shape(x), jnp.result_type(x)), tree)
    return jax.tree.map(
        lambda x, s: jax.ShapeDtypeStruct(jnp.shape(x), jnp.result_type(x), sharding=s),
        tree,
        shardings,
    )
