"""t5x loss semantics, normalizing factors, schedules and optimizer construction."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from scicot_jax.train import losses
from scicot_jax.train.optimizers import OptimizerConfig, make_optimizer, make_schedule


def _np_reference(logits, targets, weights, ls, z):
    v = logits.shape[-1]
    conf, low = 1 - ls, ls / (v - 1)
    soft = np.full(logits.shape, low)
    np.put_along_axis(soft, targets[..., None], conf, -1)
    log_z = np.log(np.exp(logits).sum(-1))
    logp = logits - log_z[..., None]
    norm = -(conf * np.log(conf) + (v - 1) * low * np.log(low + 1e-20))
    per = -(soft * logp).sum(-1) + z * log_z**2 - norm
    return (per * weights).sum(), (z * log_z**2 * weights).sum()


@pytest.mark.parametrize("ls,z", [(0.0, 0.0), (0.1, 1e-4)])
def test_weighted_cross_entropy_matches_reference(ls, z):
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(2, 3, 7))
    targets = rng.integers(0, 7, (2, 3))
    weights = np.array([[1, 1, 0], [1, 0, 0]], np.float32)
    total, total_z, wsum = losses.weighted_cross_entropy(
        jnp.asarray(logits), jnp.asarray(targets), jnp.asarray(weights), ls, z, 2.0
    )
    ref, ref_z = _np_reference(logits, targets, weights, ls, z)
    np.testing.assert_allclose(total, ref / 2.0, rtol=1e-5)
    np.testing.assert_allclose(total_z, ref_z / 2.0, rtol=1e-5, atol=1e-9)
    assert float(wsum) == 3.0


def test_perfect_prediction_with_label_smoothing_is_near_zero_loss():
    # The smoothing entropy is subtracted, so predicting the smoothed target exactly gives 0.
    v, ls = 5, 0.1
    soft = np.full((1, 1, v), ls / (v - 1))
    soft[0, 0, 2] = 1 - ls
    total, _, _ = losses.weighted_cross_entropy(
        jnp.log(jnp.asarray(soft)), jnp.array([[2]]), None, ls, 0.0
    )
    assert abs(float(total)) < 1e-5


def test_normalizing_factors():
    batch = {"decoder_target_tokens": np.array([[5, 6, 1, 0], [7, 1, 0, 0]])}
    f, w = losses.normalizing_factor_and_weights(losses.NUM_REAL_TARGET_TOKENS, batch)
    assert float(f) == 5.0 and w.shape == (2, 4)
    f, _ = losses.normalizing_factor_and_weights(losses.NUM_TOTAL_TARGET_TOKENS, batch)
    assert f == 8.0
    f, w = losses.normalizing_factor_and_weights(losses.AVERAGE_PER_SEQUENCE, batch)
    assert float(f) == 2.0
    np.testing.assert_allclose(np.asarray(w).sum(-1), [1.0, 1.0], rtol=1e-6)
    packed = dict(batch, decoder_segment_ids=np.array([[1, 1, 2, 0], [1, 1, 0, 0]]))
    f, w = losses.normalizing_factor_and_weights(losses.AVERAGE_PER_SEQUENCE, packed)
    assert float(f) == 3.0  # three segments, each weighing 1
    np.testing.assert_allclose(np.asarray(w)[0], [0.5, 0.5, 1.0, 0.0], rtol=1e-6)
    f, _ = losses.normalizing_factor_and_weights(233472.0, batch)
    assert f == 233472.0
    with pytest.raises(ValueError, match="loss_normalizing_factor"):
        losses.normalizing_factor_and_weights("BOGUS", batch)


def test_schedules():
    rs = make_schedule(OptimizerConfig(learning_rate=1.0, schedule="rsqrt", warmup_steps=100))
    np.testing.assert_allclose([rs(0), rs(100), rs(400)], [0.1, 0.1, 0.05], rtol=1e-6)
    lin = make_schedule(
        OptimizerConfig(learning_rate=1.0, schedule="linear", warmup_steps=10), total_steps=110
    )
    np.testing.assert_allclose([lin(0), lin(10), lin(60), lin(110)], [0, 1, 0.5, 0], atol=1e-6)
    cos = make_schedule(
        OptimizerConfig(learning_rate=2.0, schedule="cosine", end_lr_fraction=0.1), total_steps=100
    )
    np.testing.assert_allclose([cos(0), cos(50), cos(100)], [2.0, 1.1, 0.2], rtol=1e-5)
    const = make_schedule(OptimizerConfig(learning_rate=3.0, warmup_steps=4))
    np.testing.assert_allclose([const(2), const(4), const(99)], [1.5, 3.0, 3.0], rtol=1e-6)
    with pytest.raises(ValueError, match="schedule"):
        make_schedule(OptimizerConfig(schedule="exp"))
    with pytest.raises(ValueError, match="decay_steps"):
        make_schedule(OptimizerConfig(schedule="linear"))


@pytest.mark.parametrize("name", ["adafactor", "adamw"])
def test_optimizers_reduce_a_quadratic(name):
    opt, _ = make_optimizer(
        OptimizerConfig(name=name, learning_rate=0.1, clip_grad_norm=1.0, min_dim_size_to_factor=2)
    )
    params = {"w": jnp.full((4, 4), 2.0), "b": jnp.full((4,), -1.0)}
    loss = lambda p: sum(jnp.sum(x**2) for x in jax.tree.leaves(p))
    state = opt.init(params)
    start = float(loss(params))

    @jax.jit
    def step(params, state):
        updates, state = opt.update(jax.grad(loss)(params), state, params)
        return jax.tree.map(lambda p, u: p + u, params, updates), state

    for _ in range(20):
        params, state = step(params, state)
    assert float(loss(params)) < 0.5 * start
    with pytest.raises(ValueError, match="adafactor"):
        make_optimizer(OptimizerConfig(name="sgd"))


def test_cross_entropy_custom_vjp_matches_autodiff():
    rng = np.random.default_rng(1)
    logits = jnp.asarray(rng.normal(size=(2, 3, 7)) * 3, jnp.float32)
    soft = jax.nn.one_hot(jnp.array([[1, 2, 3], [0, 6, 5]]), 7) * 0.9 + 0.1 / 7

    def autodiff(lg, z):
        log_z = jax.nn.logsumexp(lg, -1)
        return jnp.sum(-jnp.sum(soft * (lg - log_z[..., None]), -1) + z * log_z**2)

    for z in (0.0, 1e-2):
        ours = jax.grad(lambda lg, z=z: losses.cross_entropy_with_logits(lg, soft, z)[0].sum())(
            logits
        )
        np.testing.assert_allclose(ours, jax.grad(autodiff)(logits, z), atol=1e-6)


@pytest.mark.parametrize("mode, expected", [("batch", 1.0), ("microbatch", 2.0)])
def test_microbatch_loss_normalization(mode, expected):
    """NUM_REAL_TARGET_TOKENS with 2 microbatches of 2 and 6 target tokens, all at loss log V:
    "batch" divides the sum by 8 (one unsplit batch), "microbatch" (t5x's trainer) sums
    2/2 + 6/6 (each microbatch by its own factor), so the objective doubles."""
    import optax

    from scicot_jax.train.state import ModelSpec, TrainState
    from scicot_jax.train.step import LossConfig, make_train_step

    vocab = 8
    spec = ModelSpec(
        apply=lambda p, b, rng, train: (
            jnp.zeros(b["decoder_target_tokens"].shape + (vocab,)) + p["w"]
        ),
        init=lambda rng: {"w": jnp.zeros(())},
        logical_axes={"w": ()},
    )
    # rows 0, 2 form microbatch 0 (1 token each), rows 1, 3 microbatch 1 (3 tokens each)
    tgt = np.array([[3, 0, 0], [3, 4, 5], [3, 0, 0], [3, 4, 5]], np.int32)
    batch = {"decoder_target_tokens": tgt, "decoder_input_tokens": tgt}
    cfg = LossConfig(z_loss=0.0, microbatch_normalization=mode)
    opt = optax.sgd(0.0)
    step = make_train_step(spec, opt, lambda s: 0.0, cfg, num_microbatches=2)
    params = spec.init(None)
    state = TrainState(step=jnp.asarray(0), params=params, opt_state=opt.init(params))
    _, metrics = jax.jit(step)(state, batch)
    np.testing.assert_allclose(float(metrics["loss"]), expected * np.log(vocab), rtol=1e-6)
    whole = make_train_step(spec, opt, lambda s: 0.0, cfg, num_microbatches=1)
    _, metrics = jax.jit(whole)(state, batch)
    np.testing.assert_allclose(float(metrics["loss"]), np.log(vocab), rtol=1e-6)
    with pytest.raises(ValueError, match="microbatch_normalization"):
        LossConfig(microbatch_normalization="t5")
