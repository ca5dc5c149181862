"""Compile the real train step (or the sampling step) for a TPU slice on this host and report.

`train --gin.COMPILE_TOPOLOGY="'v5e:4x4'"` (or `--compile_only=v5e:4x4`) ends here: abstract
state and batch with the run's shardings, no data, no checkpoint, nothing written.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp

from scicot_jax.runtime import aot
from scicot_jax.runtime import partitioning as part

PACKED_FEATURES = ("encoder_segment_ids", "encoder_positions")
PACKED_FEATURES += ("decoder_segment_ids", "decoder_positions")


def abstract_batch(
    batch_size: int, lengths: dict[str, int], sharding: Any, packed: bool = True
) -> dict[str, jax.ShapeDtypeStruct]:
    """The train step's int32 features as ShapeDtypeStructs (EncDecFeatureConverter's names)."""
    enc, dec = (batch_size, lengths["inputs"]), (batch_size, lengths["targets"])
    names = {"encoder_input_tokens": enc, "decoder_input_tokens": dec}
    names.update(decoder_target_tokens=dec, decoder_loss_weights=dec)
    if packed:
        names.update({k: enc if k.startswith("encoder") else dec for k in PACKED_FEATURES})
    return {k: jax.ShapeDtypeStruct(s, jnp.int32, sharding=sharding) for k, s in names.items()}


def train_report(
    config: Any, topology: str, batch_size: int, spec: Any = None, packed: bool = True
) -> aot.CompileReport:
    """Compiles `config`'s train step (TrainConfig) for `topology` on an abstract state and an
    abstract global batch of `batch_size` rows."""
    from scicot_jax.train.state import TrainState, abstract_like, t5_spec
    from scicot_jax.train.trainer import check_batch_rows, jit_train_step, make_setup

    devices = aot.topology_devices(topology)
    mesh = part.make_mesh(config.partitioning.model_parallel, devices=devices)
    n = check_batch_rows(batch_size, config, mesh, name="BATCH_SIZE", topology=topology)
    spec = spec or t5_spec(config.model, config.feature_lengths)
    su = make_setup(config, spec, mesh)
    state = TrainState(
        step=jax.ShapeDtypeStruct((), jnp.int32, sharding=su.replicated),
        params=abstract_like(su.abstract_params, su.param_shardings),
        opt_state=abstract_like(su.abstract_opt_state, su.opt_shardings),
    )
    lengths = config.feature_lengths
    batch = abstract_batch(n, lengths, su.data, packed)
    fpe = spec.flops_per_example(lengths["inputs"], lengths["targets"])
    return aot.compile_report(
        jit_train_step(su, spec, config),
        (state, batch),
        mesh,
        what="train step",
        topology=topology,
        model_flops=fpe * n / len(devices) if fpe else None,
        rules=su.rules,
    )


def decode_report(
    model: Any,
    topology: str,
    *,
    batch_size: int,
    input_length: int,
    max_decode_length: int,
    model_parallel: int = 1,
    parameter_partitioning_dims: int = 1,
    method: str = "sample",
    num_decodes: int = 1,
) -> aot.CompileReport:
    """Compiles the sampling step (encoder, prefill and the decode loop) for `topology`."""
    from scicot_jax.model import flops as flops_lib
    from scicot_jax.model import init_params, logical_axes
    from scicot_jax.model.decoding import _generate

    devices = aot.topology_devices(topology)
    mesh = part.make_mesh(model_parallel, devices=devices)
    rules = part.standard_logical_axis_rules(1, parameter_partitioning_dims)
    shapes = {"encoder": (1, input_length), "decoder": (1, max_decode_length)}
    abs_params = jax.eval_shape(
        lambda k: init_params(model, k, batch_shapes=shapes), jax.random.key(0)
    )
    p_sh = part.params_shardings(logical_axes(model), abs_params, mesh, rules)
    # Inference holds the weights in the activation dtype (bf16), as t5x's inference does.
    params = jax.tree.map(
        lambda a, s: jax.ShapeDtypeStruct(a.shape, model.activation_dtype, sharding=s),
        abs_params,
        p_sh,
    )
    tokens = jax.ShapeDtypeStruct(
        (batch_size, input_length), jnp.int32, sharding=part.batch_sharding(mesh)
    )
    rep = part.replicated(mesh)
    scalar = jax.ShapeDtypeStruct((), jnp.float32, sharding=rep)
    key = jax.ShapeDtypeStruct((), jax.random.key(0).dtype, sharding=rep)
    static = dict(
        config=model,
        max_len=max_decode_length,
        method=method,
        num_decodes=num_decodes,
        top_k=0,
        use_top_p=False,
    )

    class _Bound:  # aot.compile_report lowers `.lower(*args)`; the statics go with it
        @staticmethod
        def lower(*args: Any) -> Any:
            return _generate.lower(*args, **static)

    # Forward FLOPs: the encoder over the inputs, the decoder over every new token.
    fwd = flops_lib.flops_per_example(model, input_length, max_decode_length, training=False)
    return aot.compile_report(
        _Bound,
        (params, tokens, None, scalar, scalar, scalar, key),
        mesh,
        what=f"{method} decode (batch {batch_size}, inputs {input_length}, "
        f"{max_decode_length} new tokens)",
        topology=topology,
        model_flops=fwd * batch_size * num_decodes / len(devices),
        rules=rules,
        unknown_trip=max_decode_length,  # the loop stops at EOS: counted at its bound
    )


def report_or_fail(config: Any, topology: str, data: Any) -> aot.CompileReport:
    """The train binary's compile-only run on `data`'s batches (its DatasetConfig: batch size,
    packing): prints the report; ValueError (one line) if too big."""
    report = train_report(config, topology, data.batch_size, packed=data.pack)
    print(report.format(), flush=True)
    if report.shortfall():
        raise ValueError(report.shortfall())
    return report


def main(argv: list[str] | None = None) -> int:
    """`python -m scicot_jax.train.compile_only --preset xxl --topology v5e:8x8 ...`: the
    sampling step's compile report; exit 2 with one line when it does not fit."""
    import argparse
    import sys

    from scicot_jax.model.config import PRESET_NAMES, T5Config

    p = argparse.ArgumentParser(description=main.__doc__)
    p.add_argument("--preset", choices=PRESET_NAMES, required=True)
    p.add_argument("--topology", required=True, help='e.g. "v5e:8x8"')
    p.add_argument("--batch", type=int, default=256)
    p.add_argument("--inputs", type=int, default=512)
    p.add_argument("--new-tokens", type=int, default=128)
    p.add_argument("--model-parallel", type=int, default=1)
    p.add_argument("--parameter-partitioning-dims", type=int, default=1, choices=(1, 2))
    p.add_argument("--method", default="sample", choices=("greedy", "sample", "beam"))
    p.add_argument("--num-decodes", type=int, default=1)
    a = p.parse_args(argv)
    try:
        report = decode_report(
            T5Config.preset(a.preset),
            a.topology,
            batch_size=a.batch,
            input_length=a.inputs,
            max_decode_length=a.new_tokens,
            model_parallel=a.model_parallel,
            parameter_partitioning_dims=a.parameter_partitioning_dims,
            method=a.method,
            num_decodes=a.num_decodes,
        )
    except ValueError as e:
        print(f"compile_only: error: {e}", file=sys.stderr)
        return 2
    print(report.format())
    if report.shortfall():
        print(f"compile_only: error: {report.shortfall()}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
