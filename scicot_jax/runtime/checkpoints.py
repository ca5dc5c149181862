"""orbax checkpoints: async saves, keep-N, data position alongside, corrupt-step fallback."""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any

import jax
import numpy as np
import orbax.checkpoint as ocp

log = logging.getLogger(__name__)

CHECKPOINT_SUBDIR = "checkpoints"


class Checkpoints:
    """A CheckpointManager over `<model_dir>/checkpoints/<step>/{params,opt_state,data,meta}`."""

    def __init__(self, model_dir: str | Path, *, keep: int = 3, async_save: bool = True):
        self.directory = Path(model_dir).absolute() / CHECKPOINT_SUBDIR
        self.directory.mkdir(parents=True, exist_ok=True)
        self._keep, self._async = keep, async_save
        self._open()

    def _open(self) -> None:
        opts = ocp.CheckpointManagerOptions(
            max_to_keep=self._keep, create=True, enable_async_checkpointing=self._async
        )
        self.manager = ocp.CheckpointManager(
            self.directory, options=opts, item_names=("params", "opt_state", "data", "meta")
        )

    def all_steps(self) -> list[int]:
        """Committed steps, oldest first (orbax ignores unfinished temporary directories)."""
        return sorted(self.manager.all_steps())

    def latest_step(self) -> int | None:
        steps = self.all_steps()
        return steps[-1] if steps else None

    def save(self, step: int, params: Any, opt_state: Any, data: dict, meta: dict) -> bool:
        """Starts a (possibly async) save of one step; returns False if it already exists."""
        if step in self.manager.all_steps():
            return False
        meta = dict(meta, step=int(step), saved_at=time.time())
        return self.manager.save(
            step,
            args=ocp.args.Composite(
                params=ocp.args.StandardSave(params),
                opt_state=ocp.args.StandardSave(opt_state),
                data=ocp.args.JsonSave(data),
                meta=ocp.args.JsonSave(meta),
            ),
            force=True,
        )

    def restore_latest(
        self, abstract_params: Any, abstract_opt_state: Any
    ) -> tuple[int, Any, Any, dict, dict] | None:
        """(step, params, opt_state, data, meta) from the newest readable step, or None.

        A step that fails to restore (truncated or missing files) is renamed to
        `<step>.corrupt` with a warning and the previous one is tried.
        """
        for step in reversed(self.all_steps()):
            try:
                out = self.manager.restore(
                    step,
                    args=ocp.args.Composite(
                        params=ocp.args.StandardRestore(abstract_params),
                        opt_state=ocp.args.StandardRestore(abstract_opt_state),
                        data=ocp.args.JsonRestore(),
                        meta=ocp.args.JsonRestore(),
                    ),
                )
                _check_finite(out["params"], f"{self.directory}/{step}")
                return step, out["params"], out["opt_state"], dict(out["data"]), dict(out["meta"])
            except Exception as e:  # noqa: BLE001 - any failure means "not usable"
                log.warning(
                    "checkpoint %s/%d is unreadable (%s: %s); falling back to the previous one",
                    self.directory,
                    step,
                    type(e).__name__,
                    e,
                )
                self._quarantine(step)
        return None

    def _quarantine(self, step: int) -> None:
        """Moves a bad step aside so a later save of the same step number can succeed."""
        src = self.directory / str(step)
        if jax.process_index() == 0 and src.exists():
            dst = self.directory / f"{step}.corrupt-{int(time.time())}"
            src.rename(dst)
            log.warning("moved unreadable checkpoint to %s", dst)
        self.manager.reload()

    def wait(self) -> None:
        """Blocks until pending async saves are committed."""
        self.manager.wait_until_finished()

    def close(self) -> None:
        self.manager.wait_until_finished()
        self.manager.close()


def _check_finite(tree: Any, where: str) -> None:
    for leaf in jax.tree.leaves(tree):
        if not bool(np.isfinite(np.asarray(jax.device_get(leaf), np.float32)).all()):
            raise ValueError(f"non-finite values in checkpoint {where}")


def read_meta(step_dir: str | Path) -> dict:
    """The JSON meta item of a trainer step directory."""
    p = Path(step_dir) / "meta" / "metadata"
    if not p.exists():
        raise FileNotFoundError(f"{step_dir}: not a trainer checkpoint step (no meta/metadata)")
    return json.loads(p.read_text())


def is_trainer_step_dir(path: str | Path) -> bool:
    return (Path(path) / "params").is_dir() and (Path(path) / "meta").is_dir()


def resolve_step_dir(path: str | Path) -> Path | None:
    """A trainer step dir for `path` being a step dir, a checkpoints dir or a model dir."""
    p = Path(path)
    if is_trainer_step_dir(p):
        return p
    for base in (p / CHECKPOINT_SUBDIR, p):
        steps = (
            sorted(
                int(c.name) for c in base.glob("*") if c.name.isdigit() and is_trainer_step_dir(c)
            )
            if base.is_dir()
            else []
        )
        if steps:
            return base / str(steps[-1])
    return None
