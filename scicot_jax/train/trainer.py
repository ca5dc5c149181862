"""The training loop: sharded state, AOT-compiled step, checkpoints, preemption, metrics."""

from __future__ import annotations

import dataclasses
import itertools
import logging
import math
import signal
import threading
import time
from collections.abc import Callable
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from scicot_jax import platforms
from scicot_jax.checkpoints.initial import restore_initial
from scicot_jax.checkpoints.orbax import Checkpoints
from scicot_jax.paths import as_path
from scicot_jax.progress import StepProgress
from scicot_jax.runtime import deadlines
from scicot_jax.runtime import partitioning as part
from scicot_jax.runtime.failures import RunFailed
from scicot_jax.runtime.metrics import MetricsWriter, Throughput
from scicot_jax.train.configs import CheckpointConfig, PartitioningConfig
from scicot_jax.train.data_iter import Batches, Prefetcher, open_batches, to_global
from scicot_jax.train.optimizers import OptimizerConfig, make_optimizer
from scicot_jax.train.state import ModelSpec, TrainState, abstract_like, t5_spec
from scicot_jax.train.step import (
    DEFAULT_DROPOUT_RNG_IMPL,
    LossConfig,
    check_rng_impl,
    make_eval_step,
    make_train_step,
    summarize,
)

log = logging.getLogger(__name__)


class NonFiniteLossError(RunFailed):
    """Raised when loss or gradient norm is NaN/inf; no checkpoint is written for that state."""


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """All knobs of a training run; the batch size is the data's (its global rows per step)."""

    model_dir: str
    train_steps: int  # absolute, counting a restored checkpoint's step (t5x's total_steps)
    model: Any = None  # T5Config; unused when a ModelSpec is passed to train()
    feature_lengths: dict = dataclasses.field(
        default_factory=lambda: {"inputs": 512, "targets": 128}
    )
    optimizer: OptimizerConfig = OptimizerConfig()
    loss: LossConfig = LossConfig()
    checkpoint: CheckpointConfig = CheckpointConfig()
    partitioning: PartitioningConfig = PartitioningConfig()
    num_microbatches: int = 1
    seed: int = 0  # param init and dropout
    dropout_rng_impl: str = DEFAULT_DROPOUT_RNG_IMPL  # "rbg" | "unsafe_rbg" | "threefry2x32"
    log_period: int = 100
    eval_period: int = 0  # 0: no eval during training
    eval_steps: int | None = None  # cap on eval batches per eval (None: the whole iterator)
    prefetch: int = 2
    handle_sigterm: bool = True
    progress: bool = True  # a progress line on stderr (process 0): step, loss, tok/s, ETA

    def __post_init__(self) -> None:
        check_rng_impl(self.dropout_rng_impl)


@dataclasses.dataclass
class TrainResult:
    step: int
    preempted: bool
    metrics: dict[str, float]
    eval_metrics: dict[str, float]
    checkpoint_dir: str
    state: TrainState | None = None


class _StopFlag:
    """Set by SIGTERM (preemption); the loop checks it after every step."""

    def __init__(self, install: bool):
        self.event = threading.Event()
        self._old = None
        if install and threading.current_thread() is threading.main_thread():
            self._old = signal.signal(signal.SIGTERM, self._handle)

    def _handle(self, signum: int, frame: Any) -> None:
        log.warning("SIGTERM received: will save a checkpoint and stop after this step")
        self.event.set()

    def should_stop(self, step: int) -> bool:
        """Whether to stop after `step`; on a pod every process gets the same answer."""
        if jax.process_count() == 1:
            return self.event.is_set()
        from jax.experimental import multihost_utils

        try:  # the coordination service's preemption notice (t5x's sync point)
            if multihost_utils.reached_preemption_sync_point(step):
                return True
        except Exception:  # noqa: BLE001 - no preemption service configured
            pass
        # A SIGTERM to any one process stops all of them after this same step.
        return bool(multihost_utils.process_allgather(np.asarray(self.event.is_set())).any())

    def restore(self) -> None:
        if self._old is not None:
            signal.signal(signal.SIGTERM, self._old)


def train(config: TrainConfig, batches: Batches, **kw: Any) -> TrainResult:
    """_train with every storage call and the life after SIGTERM/Ctrl-C bounded in time
    (runtime.deadlines): an outage ends the run with one line instead of a hang."""
    with deadlines.watching("scicot-train", signals=config.handle_sigterm) as guard:
        return _train(config, batches, guard=guard, **kw)


def _train(
    config: TrainConfig,
    batches: Batches,
    *,
    guard: deadlines.Guard,
    eval_batches: Callable[[], Any] | None = None,
    model_spec: ModelSpec | None = None,
    mesh: jax.sharding.Mesh | None = None,
    eval_fn: Callable[[int, Any], dict[str, float]] | None = None,
    return_state: bool = False,
    on_start: Callable[[], None] | None = None,
) -> TrainResult:
    """Trains to `config.train_steps`, resuming from `<model_dir>/checkpoints` when present.

    batches: numpy batches (this host's rows of the global batch), as an iterable or a factory
    `start_batch -> iterable` that can seek. eval_batches: factory of a finite iterable, used
    every eval_period for teacher-forced loss; eval_fn(step, params) adds metrics (e.g. SeqIO).
    on_start runs once the checkpoint to resume (if any) has been checked against the model,
    before the run writes anything (the binary writes config.gin there).
    """
    if model_spec is None and config.model is None:
        raise ValueError("TrainConfig.model (a T5Config) is required unless model_spec is given")
    mesh = mesh or part.make_mesh(config.partitioning.model_parallel)
    spec = model_spec or t5_spec(config.model, config.feature_lengths)
    su = make_setup(config, spec, mesh)
    p_sh, o_sh = su.param_shardings, su.opt_shardings
    abs_params, abs_opt, rules = su.abstract_params, su.abstract_opt_state, su.rules
    rep, data_sh = su.replicated, su.data

    with guard.storage("restore the latest checkpoint of", config.model_dir):
        ckpts = Checkpoints(
            config.model_dir,
            keep=config.checkpoint.keep,
            async_save=config.checkpoint.async_save,
            storage_call=deadlines.call,  # a save that failed for a retryable reason is redone
        )
        sharded_opt = abstract_like(abs_opt, o_sh)
        restored = ckpts.restore_latest(
            abstract_like(abs_params, p_sh), sharded_opt, _model_dict(spec.config)
        )
    with jax.set_mesh(mesh), nn.logical_axis_rules(rules):
        if restored:
            step0, params, opt_state, data_pos, _ = restored
            log.info("resuming from %s/%d", ckpts.directory, step0)
            consumed = int(data_pos.get("batches_consumed", step0))
        else:
            step0, consumed, params, opt_state = 0, 0, None, None
            if config.checkpoint.initial_path:
                params, step0, opt_state = restore_initial(
                    config.checkpoint.initial_path,
                    su,
                    spec,
                    sharded_opt,
                    config.checkpoint.initial_params_only,
                )
            if opt_state is None:
                fresh = init_state(su, spec, config.seed, params)
                params, opt_state = fresh.params, fresh.opt_state
        state = TrainState(
            step=jax.device_put(jnp.asarray(step0, jnp.int32), rep),
            params=params,
            opt_state=opt_state,
        )

    with guard.storage("write to", config.model_dir):
        if on_start is not None:
            on_start()
        writer = MetricsWriter(as_path(config.model_dir) / "train")
        eval_writer = (
            MetricsWriter(as_path(config.model_dir) / "eval") if (eval_batches or eval_fn) else None
        )
    stop = _StopFlag(config.handle_sigterm)
    prefetch = Prefetcher(open_batches(batches, consumed), data_sh, config.prefetch)
    last: dict[str, float] = {}
    last_eval: dict[str, float] = {}
    step = step0
    preempted = False
    try:
        if step0 >= config.train_steps:
            log.warning(
                "already at step %d >= train_steps=%d: nothing to train (train_steps is the "
                "absolute step to stop at, counting a restored checkpoint's step, as in t5x)",
                step0,
                config.train_steps,
            )
            return TrainResult(
                step0, False, {}, {}, str(ckpts.directory), state if return_state else None
            )
        first = next(prefetch)
        # the global batch size: the data's own
        rows = check_batch_rows(first["encoder_input_tokens"].shape[0], config, mesh)
        compiled = compile_step(jit_train_step(su, spec, config), su, state, first)
        part.sync_processes("train step compiled")  # hosts compile at different speeds
        in_len = first["encoder_input_tokens"].shape[1]
        tgt_len = first["decoder_target_tokens"].shape[1]
        fpe = spec.flops_per_example(in_len, tgt_len) if spec.flops_per_example else None
        meter = Throughput(fpe, mesh.devices.size)
        eval_step = jax.jit(
            make_eval_step(spec, config.loss), in_shardings=(p_sh, data_sh), out_shardings=rep
        )
        acc: list[dict[str, float]] = []
        pending = None
        batch: dict | None = first
        bar = StepProgress(
            "train",
            config.train_steps,
            start=step0,
            enabled=config.progress and jax.process_index() == 0,
        )

        def flush(p: tuple[int, dict]) -> dict[str, float]:
            """Fetches one step's metrics (host sync) and stops the run if they are not finite."""
            s, m = p
            vals = summarize(jax.device_get(m))
            for k in ("loss", "grad_norm"):
                if not math.isfinite(vals[k]):
                    good = ckpts.latest_step()
                    raise NonFiniteLossError(
                        f"{k} is {vals[k]} at step {s} (model_dir={config.model_dir}); stopping "
                        f"without saving. Last good checkpoint: "
                        f"{f'{ckpts.directory}/{good}' if good is not None else 'none'}"
                    )
            acc.append(vals)
            return vals

        def save(s: int) -> None:
            with guard.storage("save checkpoint", f"{ckpts.directory}/{s}"):
                _save(s)

        def _save(s: int) -> None:
            ckpts.save(
                s,
                state.params,
                state.opt_state,
                {"batches_consumed": consumed, "batch_size": rows},
                {"model": _model_dict(spec.config), "train_steps": config.train_steps},
            )

        while step < config.train_steps:
            if batch is None:
                try:
                    batch = next(prefetch)
                except StopIteration:
                    log.warning("data exhausted at step %d", step)
                    break
            state, metrics = compiled(state, batch)
            batch = None
            step += 1
            consumed += 1
            meter.add(rows, rows * (in_len + tgt_len))
            if pending is not None:  # one step late: the device is already busy with `step`
                flush(pending)
            pending = (step, metrics)
            preempted = stop.should_stop(step)
            save_now = (
                step % config.checkpoint.period == 0 or step == config.train_steps or preempted
            )
            log_now = step % config.log_period == 0 or save_now
            if save_now or log_now:
                flush(pending)
                pending = None
            if log_now and acc:
                last = {k: float(np.mean([a[k] for a in acc])) for k in acc[-1]}
                last.update(meter.measure())
                with guard.storage("write metrics to", writer.dir):
                    writer.write(step, last)
                # `objective` is what the optimizer sees (summed unless LOSS_NORMALIZING_FACTOR
                # normalizes it); `loss/token` the mean cross-entropy per target token.
                log.info(
                    "step %d: objective %.4g loss/token %.4f token_acc %.3f lr %.2e %.0f tok/s%s",
                    step,
                    last["loss"],
                    last["cross_ent_loss"],
                    last["accuracy"],
                    last["learning_rate"],
                    last["tokens_per_s"],
                    f" MFU {last['mfu']:.1%}" if "mfu" in last else "",
                )
                acc.clear()
            tokens = rows * (in_len + tgt_len)
            shown = acc[-1] if acc else last
            bar.advance(step, tokens, **{"loss/token": shown.get("cross_ent_loss")})
            if save_now:
                save(step)
            if config.eval_period and step % config.eval_period == 0 and not preempted:
                last_eval = _evaluate(
                    eval_step,
                    config,
                    state.params,
                    eval_batches,
                    eval_fn,
                    step,
                    mesh,
                    data_sh,
                    rules,
                )
                if eval_writer:
                    with guard.storage("write metrics to", eval_writer.dir):
                        eval_writer.write(step, last_eval)
            if preempted:
                log.warning("stopped by SIGTERM at step %d; checkpoint saved", step)
                break
        if pending is not None:
            flush(pending)
        if step < config.train_steps:  # stopped early: end the progress line where it stands
            bar.maybe_render(force=True)
        if step > step0 and ckpts.latest_step() != step:  # stopped early: data ran out
            save(step)
        with guard.storage("finish saving checkpoints in", ckpts.directory):
            ckpts.wait()
    finally:
        stop.restore()
        prefetch.close()
        with guard.storage("close", config.model_dir):
            writer.close()
            if eval_writer:
                eval_writer.close()
            ckpts.close()
    return TrainResult(
        step, preempted, last, last_eval, str(ckpts.directory), state if return_state else None
    )


@dataclasses.dataclass(frozen=True)
class Setup:
    """Mesh, optimizer and the shardings of state and batches for one model and config."""

    mesh: Any
    optimizer: Any
    schedule: Any
    abstract_params: Any
    abstract_opt_state: Any
    param_shardings: Any
    opt_shardings: Any
    state: TrainState  # of shardings
    data: Any
    replicated: Any
    rules: Any = part.LOGICAL_AXIS_RULES


def make_setup(config: TrainConfig, spec: ModelSpec, mesh: Any) -> Setup:
    """Abstract params/optimizer state and their shardings on `mesh` (nothing allocated)."""
    optimizer, schedule = make_optimizer(config.optimizer, config.train_steps)
    rules = part.standard_logical_axis_rules(
        config.partitioning.activation_partitioning_dims,
        config.partitioning.parameter_partitioning_dims,
    )
    abs_params = jax.eval_shape(spec.init, jax.random.key(config.seed))
    p_sh = part.params_shardings(spec.logical_axes, abs_params, mesh, rules)
    abs_opt = jax.eval_shape(optimizer.init, abs_params)
    o_sh = part.opt_state_shardings(optimizer, abs_opt, abs_params, p_sh, mesh)
    rep = part.replicated(mesh)
    return Setup(
        mesh,
        optimizer,
        schedule,
        abs_params,
        abs_opt,
        p_sh,
        o_sh,
        TrainState(step=rep, params=p_sh, opt_state=o_sh),
        part.batch_sharding(mesh),
        rep,
        rules,
    )


def init_state(su: Setup, spec: ModelSpec, seed: int, params: Any = None) -> TrainState:
    """Fresh sharded state (params from `spec.init` unless given)."""
    with jax.set_mesh(su.mesh), nn.logical_axis_rules(su.rules):
        if params is None:
            params = jax.jit(spec.init, out_shardings=su.param_shardings)(jax.random.key(seed))
        else:
            params = jax.device_put(params, su.param_shardings)
        opt_state = jax.jit(su.optimizer.init, out_shardings=su.opt_shardings)(params)
    return TrainState(
        step=jax.device_put(jnp.asarray(0, jnp.int32), su.replicated),
        params=params,
        opt_state=opt_state,
    )


def jit_train_step(su: Setup, spec: ModelSpec, config: TrainConfig) -> Any:
    """jax.jit of the step with explicit in/out shardings and the state donated."""
    fn = make_train_step(
        spec,
        su.optimizer,
        su.schedule,
        config.loss,
        num_microbatches=config.num_microbatches,
        dropout_seed=config.seed,
        mesh=su.mesh,
        dropout_rng_impl=config.dropout_rng_impl,
    )
    return jax.jit(
        fn,
        in_shardings=(su.state, su.data),
        out_shardings=(su.state, su.replicated),
        donate_argnums=(0,),
    )


def compile_step(jitted: Any, su: Setup, state: TrainState, batch: dict) -> Any:
    """AOT-compiles the step; logs compile time and memory_analysis()."""
    t0 = time.perf_counter()
    with jax.set_mesh(su.mesh), nn.logical_axis_rules(su.rules):
        lowered = jitted.lower(state, batch)
        options = platforms.compiler_options(su.mesh.devices.flat[0].platform)
        try:
            compiled = lowered.compile(compiler_options=options)
        except jax.errors.JaxRuntimeError as e:
            if "No such compile option" not in str(e):
                raise
            # An XLA without the option: the step is the same, only slower (platforms.py).
            log.warning("train step compiled without %s: %s", sorted(options), e)
            compiled = lowered.compile()
    log.info("train step compiled in %.1fs", time.perf_counter() - t0)
    try:
        mem = compiled.memory_analysis()
        if mem is not None:
            log.info(
                "train step memory: args %.1f MiB, temps %.1f MiB, outputs %.1f MiB",
                mem.argument_size_in_bytes / 2**20,
                mem.temp_size_in_bytes / 2**20,
                mem.output_size_in_bytes / 2**20,
            )
    except Exception as e:  # noqa: BLE001 - not every backend reports it
        log.info("memory_analysis unavailable: %s", e)
    return compiled


def _evaluate(
    fn: Callable,
    config: TrainConfig,
    params: Any,
    eval_batches: Callable[[], Any] | None,
    eval_fn: Callable | None,
    step: int,
    mesh: Any,
    data_sh: Any,
    rules: Any,
) -> dict[str, float]:
    """Teacher-forced loss over eval batches, plus whatever eval_fn reports."""
    out: dict[str, float] = {}
    if eval_batches is not None:
        totals: dict[str, float] = {}
        with jax.set_mesh(mesh), nn.logical_axis_rules(rules):
            for b in _lockstep(eval_batches(), config.eval_steps):
                for k, v in jax.device_get(fn(params, to_global(b, data_sh))).items():
                    totals[k] = totals.get(k, 0.0) + float(v)
        if totals:
            s = summarize(totals)
            out.update(
                {"loss": s["cross_ent_loss"], "accuracy": s["accuracy"], "tokens": s["tokens"]}
            )
    if eval_fn is not None:
        out.update(eval_fn(step, params))
    if out:
        log.info("eval at step %d: %s", step, {k: round(v, 4) for k, v in out.items()})
    return out


def _lockstep(batches: Any, limit: int | None) -> Any:
    """This host's eval batches, padded so every process runs the same number of steps.

    Hosts read their own shards, which may hold different numbers of batches (or none); a host
    that runs out feeds zero batches (zero tokens carry no loss weight; shaped like the other
    hosts' batches) until all are done, instead of leaving the others waiting in a collective.
    """
    it = iter(batches)
    zero = None
    if jax.process_count() > 1:
        from scicot_jax.runtime import multihost

        first = next(it, None)
        it = itertools.chain([first] if first is not None else [], it)
        specs = multihost.allgather_objects(
            None if first is None else {k: [v.shape, v.dtype.str] for k, v in first.items()}
        )
        spec = next((s for s in specs if s is not None), None)
        if spec is None:
            return
        zero = {k: np.zeros(shape, np.dtype(dt)) for k, (shape, dt) in spec.items()}
    for _ in itertools.count() if limit is None else range(limit):
        b = next(it, None)
        part.sync_processes("eval batch")  # the eval step may still be compiling elsewhere
        if jax.process_count() > 1:
            from jax.experimental import multihost_utils

            if not multihost_utils.process_allgather(np.asarray(b is not None)).any():
                return
        elif b is None:
            return
        yield zero if b is None else b


def check_batch_rows(
    n: int, config: TrainConfig, mesh: Any, name: str = "batch_size", topology: str = ""
) -> int:
    """`n` global rows, once they divide over the mesh's data axis and the microbatches."""
    data, micro = mesh.shape[part.DATA_AXIS], config.num_microbatches
    if n % (data * micro):
        of = f" of {topology}" if topology else ""
        raise ValueError(
            f"{name}={n} is not divisible by the data axis ({data} devices{of}) x "
            f"num_microbatches ({micro})"
        )
    return n


def _model_dict(model_config: Any) -> dict | None:
    if model_config is None:
        return None
    if hasattr(model_config, "to_dict"):
        return model_config.to_dict()
    return dataclasses.asdict(model_config) if dataclasses.is_dataclass(model_config) else None
