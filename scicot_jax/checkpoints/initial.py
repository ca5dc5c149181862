"""INITIAL_CHECKPOINT_PATH with t5x's restore semantics.

Params always. Unless `params_only`, also the checkpoint's step (TRAIN_STEPS stays the absolute
step to stop at, as in t5x) and its optimizer state when it maps onto this optimizer: t5x
Adafactor's per-param state, or our own trainer's optax state. A mismatch keeps the params and
the step, starts the optimizer fresh, and says so.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

import jax

from scicot_jax.checkpoints import orbax, t5x_adafactor
from scicot_jax.checkpoints.init_from import detect_format, load_initial
from scicot_jax.paths import PathLike

if TYPE_CHECKING:  # annotations only: checkpoints never imports train
    from scicot_jax.train.state import ModelSpec
    from scicot_jax.train.trainer import Setup

log = logging.getLogger(__name__)


def restore_initial(
    path: PathLike, setup: Setup, spec: ModelSpec, sharded_opt: Any, params_only: bool = False
) -> tuple[Any, int, Any]:
    """(params, step, opt_state or None) on the setup's shardings; step 0 when params_only.
    `sharded_opt`: the optimizer state's ShapeDtypeStructs with their shardings."""
    params, step, param_states = load_initial(
        path, setup.abstract_params, setup.param_shardings, spec.config, optimizer=not params_only
    )
    if params_only or step is None:
        return params, 0, None
    try:
        opt_state = _optimizer_state(path, setup, spec, sharded_opt, int(step), param_states)
    except Exception as e:  # noqa: BLE001 - any mismatch means "start the optimizer fresh"
        log.warning(
            "%s: optimizer state not restored (%s: %s); params and step %d restored, "
            "optimizer starts fresh",
            path,
            type(e).__name__,
            e,
            step,
        )
        opt_state = None
    log.info(
        "initial checkpoint %s: step %d%s", path, step, ", optimizer state" if opt_state else ""
    )
    return params, int(step), opt_state


def _optimizer_state(
    path: PathLike, setup: Setup, spec: ModelSpec, sharded_opt: Any, step: int, param_states: Any
) -> Any:
    if detect_format(path) == "trainer":
        return orbax.restore_item(orbax.resolve_step_dir(path), "opt_state", sharded_opt)
    if param_states is None:
        raise ValueError("the checkpoint holds no optimizer state")
    host = t5x_adafactor.from_t5x(
        setup.abstract_opt_state, param_states, step, setup.abstract_params, spec.logical_axes
    )
    return jax.tree.map(jax.device_put, host, setup.opt_shardings)
