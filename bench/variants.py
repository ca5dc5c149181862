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


def _module_with(module: Any, **replaced: Any) -> types.SimpleNamespace:
    """`module` as a namespace with some names replaced, to put in a model module's import."""
    names = {n: getattr(module, n) for n in dir(module) if n[0] != "_"}
    return types.SimpleNamespace(**{**names, **replaced})


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

    with _replaced(relpos, "jnp", _module_with(jnp, take=take)):
        yield


@contextmanager
def oriented_kernel_gradient() -> Iterator[None]:
    """Float32 Dense takes a kernel's gradient as (g^T x)^T when the kernel is [in > out].

    Tried for XLA:CPU (its x^T g is slow when written with the narrow dim minor) and not kept:
    no difference on the CPU bench's step (docs/step_speed.md, section 2b).
    """
    import jax
    import jax.numpy as jnp

    from scicot_jax.model import layers

    @jax.custom_vjp
    def dot(x: jax.Array, kernel: jax.Array) -> jax.Array:
        return jnp.dot(x, kernel)

    def backward(res: tuple, g: jax.Array) -> tuple[jax.Array, jax.Array]:
        x, kernel = res
        if kernel.shape[0] > kernel.shape[1]:  # the barrier stops XLA folding the .T back
            grad = jax.lax.optimization_barrier(jnp.dot(g.T, x)).T
        else:
            grad = jnp.dot(x.T, g)
        return jnp.dot(g, kernel.T), grad

    dot.defvjp(lambda x, kernel: (jnp.dot(x, kernel), (x, kernel)), backward)
    with _replaced(layers, "jnp", _module_with(jnp, dot=dot)):
        yield


@contextmanager
def no_logits_barrier() -> Iterator[None]:
    """logits_dense without fix 4's optimization barrier (Dense.kernel_grad_first)."""
    import jax

    from scicot_jax.model import layers

    lax = _module_with(jax.lax, optimization_barrier=lambda x: x)
    with _replaced(layers, "jax", _module_with(jax, lax=lax)):
        yield


TPU_VARIANTS: dict[str, Callable[[], Any]] = {
    "lookup-per-stack": lookup_per_stack,
    "relpos-one-hot": relpos_one_hot,
    "no-logits-barrier": no_logits_barrier,
}
