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


def _tpu_step():
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "bench" / "tpu_step.py"
    spec = importlib.util.spec_from_file_location("tpu_step", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_tpu_step_without_t5x_says_how_to_get_it(tmp_path, capsys):
    """No t5x clones under --t5x: the bench prints how to get them and exits 0, compiling nothing."""
    assert _tpu_step().main(["--t5x", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "git clone https://github.com/google-research/t5x" in out
    assert "--t5x" in out


def test_tpu_step_table_ratios():
    """The side-by-side table divides ours by t5x's figure per metric and flags failed cells."""
    mod = _tpu_step()
    base = dict(preset="small", topology="v5e:2x2", chips=4, collective=2**20)
    ours = dict(base, system="ours", flops=2e12, bytes=3 * 2**30, argument=2**30, temp=2**29)
    t5x = dict(base, system="t5x", flops=1e12, bytes=2**30, argument=2**30, temp=2**30)
    text = mod.table([ours, t5x, dict(base, system="ours", topology="v4:2x2x1", error="boom")])
    row = next(line for line in text.splitlines() if "v5e:2x2" in line)
    assert "(2.000)" in row and "(3.000)" in row and "(0.500)" in row and "(1.000)" in row
    assert "boom" in text
