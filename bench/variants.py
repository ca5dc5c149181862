"""Alternative forms of the model's step, for the benches' A/B runs: the forms the code replaced.

Each is a context manager that changes how the model traces while it is open (the library
keeps one form; these put back the other one for a measurement). bench/cpu_step_ab.py times
two forms in one process; bench/tpu_step.py --variant compiles ours in one of them.
"""

from __future__ import annotations

import types
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any


@contextmanager
def _replaced(owner: Any, name: str, value: Any) -> Iterator[None]:
    kept = getattr(owner, name)
    setattr(owner, name, value)
    try:
        yield
    finally:
        setattr(owner, name, kept)


@contextmanager
def plain_bias_add() -> Iterator[None]:
    """Attention adds the position bias as `logits + bias` (autodiff's reduce for its gradient)."""
    from scicot_jax.model import attention

    with _replaced(attention, "add_batch_shared_bias", lambda logits, bias: logits + bias):
        yield


@contextmanager
def lookup_per_stack() -> Iterator[None]:
    """Encoder and decoder look up their tokens apart (two scatter-adds in the gradient)."""
    from scicot_jax.model import t5

    with _replaced(t5.Transformer, "_embed_both", lambda self, enc, dec: (None, None)):
        yield


@contextmanager
def relpos_one_hot() -> Iterator[None]:
    """The position bias as a one-hot contraction with the [heads, buckets] table (t5x's form)."""
    import jax
    import jax.numpy as jnp

    from scicot_jax.model import relpos

    def take(a: jax.Array, indices: jax.Array, axis: int | None = None, **kw: Any) -> jax.Array:
        if axis != 1 or not jnp.issubdtype(a.dtype, jnp.floating):
            return jnp.take(a, indices, axis=axis, **kw)
        hot = jax.nn.one_hot(indices, a.shape[1], dtype=a.dtype)
        return jnp.einsum("hb,...b->h...", a, hot, precision=jax.lax.Precision.HIGHEST)

    numpy = types.SimpleNamespace(**{n: getattr(jnp, n) for n in dir(jnp) if n[0] != "_"})
    numpy.take = take
    with _replaced(relpos, "jnp", numpy):
        yield


@contextmanager
def no_logits_barrier() -> Iterator[None]:
    """logits_dense without fix 4's optimization barrier (Dense.kernel_grad_first)."""
    import jax

    from scicot_jax.model import layers

    lax = types.SimpleNamespace(**{**vars(jax.lax), "optimization_barrier": lambda x: x})
    with _replaced(layers, "jax", types.SimpleNamespace(**{**vars(jax), "lax": lax})):
        yield


TPU_VARIANTS: dict[str, Callable[[], Any]] = {
    "lookup-per-stack": lookup_per_stack,
    "relpos-one-hot": relpos_one_hot,
    "no-logits-barrier": no_logits_barrier,
}
