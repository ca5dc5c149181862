"""The model used by trainer tests: a tiny T5 (our Transformer) with a small vocab."""

from __future__ import annotations

from scicot_jax.model import T5Config
from scicot_jax.train.state import ModelSpec, t5_spec

VOCAB = 32  # matches train_toy.toy_batches token range


def tiny_config(dropout_rate: float = 0.0, **kw) -> T5Config:
    return T5Config.preset(
        "tiny",
        vocab_size=VOCAB,
        d_model=16,
        num_heads=2,
        d_kv=8,
        d_ff=32,
        num_encoder_layers=1,
        num_decoder_layers=1,
        dropout_rate=dropout_rate,
        **kw,
    )


def tiny_spec(dropout_rate: float = 0.0, **kw) -> ModelSpec:
    return t5_spec(tiny_config(dropout_rate, **kw), {"inputs": 6, "targets": 5})


def enable_compile_cache(path) -> None:
    """Persistent XLA cache: identical train steps across tests compile once per session."""
    import jax

    jax.config.update("jax_compilation_cache_dir", str(path))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)


def table_gradient_scatters(loss, params) -> int:
    """How many scatter-adds into the embedding table's shape jax.grad(loss) runs, per call."""
    import jax
    from jax.extend.core import jaxprs_in_params

    table = params["token_embedder"]["embedding"]

    def count(jaxpr) -> int:
        n = 0
        for eqn in jaxpr.eqns:
            if eqn.primitive.name == "scatter-add" and eqn.outvars[0].aval.shape == table.shape:
                n += 1
            for sub in jaxprs_in_params(eqn.params):
                n += count(sub)
        return n

    return count(jax.make_jaxpr(jax.grad(loss))(params).jaxpr)
