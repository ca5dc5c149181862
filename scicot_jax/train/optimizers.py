"""Optimizers (Adafactor, AdamW) and learning-rate schedules, built with optax."""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import optax

SCHEDULES = ("constant", "rsqrt", "linear", "cosine")


@dataclasses.dataclass(frozen=True)
class OptimizerConfig:
    """Everything that defines the update rule; gin binds it as `OptimizerConfig.*`."""

    name: str = "adafactor"  # "adafactor" (T5 default, factored) | "adamw"
    learning_rate: float = 1e-3
    schedule: str = "constant"  # one of SCHEDULES
    warmup_steps: int = 0
    decay_steps: int | None = None  # linear/cosine: steps to reach end value (default: train steps)
    end_lr_fraction: float = 0.0  # linear/cosine: final lr = learning_rate * end_lr_fraction
    weight_decay: float = 0.0  # adamw: decoupled; adafactor: t5x's weight_decay_rate
    clip_grad_norm: float | None = None  # global-norm clipping before the update
    # Adafactor (t5x defaults).
    decay_rate: float = 0.8
    min_dim_size_to_factor: int = 128
    multiply_by_parameter_scale: bool = True
    clipping_threshold: float | None = 1.0
    momentum: float | None = None
    factored: bool = True
    # AdamW.
    b1: float = 0.9
    b2: float = 0.999
    eps: float = 1e-8


def make_schedule(cfg: OptimizerConfig, total_steps: int | None = None) -> optax.Schedule:
    """The learning-rate schedule: constant, t5x rsqrt, or warmup + linear/cosine decay."""
    if cfg.schedule not in SCHEDULES:
        raise ValueError(f"OptimizerConfig.schedule={cfg.schedule!r}; expected one of {SCHEDULES}")
    lr, warm = cfg.learning_rate, max(int(cfg.warmup_steps), 0)
    if cfg.schedule == "rsqrt":
        # t5x's rsqrt_decay: lr * 1/sqrt(max(step, warmup)); flat during warmup, as in T5.
        w = max(warm, 1)
        return lambda step: lr * jnp.reciprocal(jnp.sqrt(jnp.maximum(step, w).astype(jnp.float32)))
    if cfg.schedule == "constant":
        if not warm:
            return optax.constant_schedule(lr)
        return optax.join_schedules(
            [optax.linear_schedule(0.0, lr, warm), optax.constant_schedule(lr)], [warm]
        )
    decay = cfg.decay_steps or total_steps
    if not decay:
        raise ValueError(
            f"schedule {cfg.schedule!r} needs OptimizerConfig.decay_steps or train steps"
        )
    end = lr * cfg.end_lr_fraction
    if cfg.schedule == "cosine":
        return optax.warmup_cosine_decay_schedule(0.0 if warm else lr, lr, warm, decay, end)
    body = optax.linear_schedule(lr, end, max(decay - warm, 1))
    if not warm:
        return body
    return optax.join_schedules([optax.linear_schedule(0.0, lr, warm), body], [warm])


def scale_by_param_rms(min_scale: float = 1e-3) -> optax.GradientTransformation:
    """optax.scale_by_param_block_rms with one pass over each parameter instead of two.

    optax's `safe_root_mean_squares` takes the RMS, then again of `where(rms <= min, 1, p)` (a
    gradient guard the optimizer never needs): a second read of every parameter per step. The
    value is the same: where(rms <= min_scale, min_scale, rms).
    """

    def update_fn(updates, state, params):  # noqa: ANN001, ANN202 - optax's signature
        if params is None:
            raise ValueError("scale_by_param_rms needs the params")

        def scale(u: jax.Array, p: jax.Array) -> jax.Array:
            rms = jnp.sqrt(jnp.mean(p * p))
            return u * jnp.where(rms <= min_scale, min_scale, rms)

        return jax.tree.map(scale, updates, params), state

    return optax.GradientTransformation(optax.init_empty_state, update_fn)


def adafactor(cfg: OptimizerConfig, sched: optax.Schedule) -> optax.GradientTransformation:
    """optax.adafactor's chain (same state tree, same numbers) with scale_by_param_rms."""
    tx = [
        optax.scale_by_factored_rms(
            cfg.factored, cfg.decay_rate, 0, cfg.min_dim_size_to_factor, 1e-30
        )
    ]
    if cfg.clipping_threshold is not None:
        tx.append(optax.clip_by_block_rms(cfg.clipping_threshold))
    tx.append(optax.scale_by_learning_rate(sched, flip_sign=False))
    if cfg.multiply_by_parameter_scale:
        tx.append(scale_by_param_rms())
    if cfg.momentum is not None:
        tx.append(optax.ema(cfg.momentum, debias=False, accumulator_dtype=jnp.float32))
    if cfg.weight_decay:
        tx.append(optax.add_decayed_weights(cfg.weight_decay))
    tx.append(optax.scale(-1))
    return optax.chain(*tx)


def make_optimizer(
    cfg: OptimizerConfig, total_steps: int | None = None
) -> tuple[optax.GradientTransformation, optax.Schedule]:
    """(optimizer, schedule) for the config; the schedule is returned for logging."""
    sched = make_schedule(cfg, total_steps)
    if cfg.name == "adafactor":
        opt = adafactor(cfg, sched)
    elif cfg.name == "adamw":
        opt = optax.adamw(sched, b1=cfg.b1, b2=cfg.b2, eps=cfg.eps, weight_decay=cfg.weight_decay)
    else:
        raise ValueError(f"OptimizerConfig.name={cfg.name!r}; expected 'adafactor' or 'adamw'")
    if cfg.clip_grad_norm:
        opt = optax.chain(optax.clip_by_global_norm(cfg.clip_grad_norm), opt)
    return opt, sched
