"""The train step's speed-motivated formulations compute what the plain ones do (values, grads)."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from scicot_jax.model import T5Config
from scicot_jax.model.layers import MLP_KERNEL_INIT, Dense

CFG = T5Config.preset("tiny", vocab_size=96, dtype="float32")


def test_dense_on_flattened_tokens_matches_einsum():
    """Dense flattens [B, L, in] to [B*L, in]; output and both gradients equal the 3-D einsum."""
    x = jax.random.normal(jax.random.key(0), (2, 3, 5))
    dense = Dense(7, ("embed", "mlp"), MLP_KERNEL_INIT, CFG)
    params = nn.meta.unbox(dense.init(jax.random.key(1), x))
    kernel = params["params"]["kernel"]
    w = jax.random.normal(jax.random.key(2), (2, 3, 7))

    def ours(x, k):
        return jnp.sum(dense.apply({"params": {"kernel": k}}, x) * w)

    def plain(x, k):
        return jnp.sum(jnp.einsum("bli,io->blo", x, k) * w)

    out = dense.apply(params, x)
    assert out.shape == (2, 3, 7)
    np.testing.assert_allclose(out, jnp.einsum("bli,io->blo", x, kernel), rtol=1e-6, atol=1e-6)
    for g_ours, g_plain in zip(
        jax.grad(ours, (0, 1))(x, kernel), jax.grad(plain, (0, 1))(x, kernel), strict=True
    ):
        np.testing.assert_allclose(g_ours, g_plain, rtol=1e-5, atol=1e-6)


def test_dense_keeps_logical_axes():
    """The kernel keeps its [in, out] shape and logical axis names (t5x layout, sharding rules)."""
    x = jnp.ones((2, 3, 5))
    boxed = Dense(7, ("embed", "mlp"), MLP_KERNEL_INIT, CFG).init(jax.random.key(0), x)
    spec = nn.get_partition_spec(boxed)["params"]["kernel"]
    assert tuple(spec) == ("embed", "mlp")
    assert nn.meta.unbox(boxed)["params"]["kernel"].shape == (5, 7)
