"""orbax checkpoints: async saves, keep-N, data position alongside, corrupt-step fallback."""

from __future__ import annotations

import contextlib
import json
import logging
import time
from collections.abc import Callable
from typing import Any

import jax
import numpy as np
import orbax.checkpoint as ocp

from scicot_jax.checkpoints import params_io
from scicot_jax.paths import Path, PathLike, as_path

log = logging.getLogger(__name__)

CHECKPOINT_SUBDIR = "checkpoints"


class CheckpointMismatchError(ValueError):
    """A readable checkpoint written for a different model: resuming it is refused."""


class NoReadableCheckpointError(RuntimeError):
    """Every step in a checkpoints directory failed to restore."""


class Checkpoints:
    """A CheckpointManager over `<model_dir>/checkpoints/<step>/{params,opt_state,data,meta}`."""

    def __init__(
        self,
        model_dir: PathLike,
        *,
        keep: int = 3,
        async_save: bool = True,
        storage_call: Callable[..., Any] | None = None,
    ):
        """storage_call(what, path, fn, *args) runs one storage call under the run's retry
        policy (the trainer passes runtime.deadlines.call); without it a failed save is not
        repeated."""
        self.directory = as_path(model_dir) / CHECKPOINT_SUBDIR
        self._call = storage_call or (lambda what, path, fn, *args: fn(*args))
        self.directory.mkdir(parents=True, exist_ok=True)
        self._keep, self._async = keep, async_save
        # the save not yet known to be committed: (step, (params, opt_state, data, meta)), and
        # whether it is new, running, or failed (then saved again by `wait`)
        self._pending: tuple[int, tuple] | None = None
        self._state = "new"
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
        """Starts a (possibly async) save of one step; returns False if it already exists.
        The previous save is finished first (see `wait`)."""
        self.wait()
        if step in self.manager.all_steps():
            return False
        meta = dict(meta, step=int(step), saved_at=time.time())
        self._pending, self._state = (step, (params, opt_state, data, meta)), "new"
        self._retrying(block=not self._async)
        return True

    def wait(self) -> None:
        """Blocks until the pending save is committed. A save that failed for a reason the
        storage_call policy retries (runtime.deadlines: a broken connection, an upload whose
        session the server lost) is saved again as a whole into a clean directory, within its
        budget; an uncommitted step directory is never read as a checkpoint."""
        if self._pending is not None:
            self._retrying(block=True)

    def _retrying(self, block: bool) -> None:
        step = self._pending[0]
        try:
            self._call("save checkpoint", self.directory / str(step), self._attempt, block)
        except BaseException:
            self._pending = None  # not worth repeating, or out of time: the error is the answer
            raise

    def _attempt(self, block: bool) -> None:
        """Starts the pending save unless it is running (again after a failure); if `block`,
        waits until it is committed."""
        step, items = self._pending
        if self._state != "running":
            if self._state == "failed":
                self._discard_failed(step)
                if not _alive(items):  # donated to later train steps: the next save replaces it
                    log.warning(
                        "checkpoint %s/%d was not saved; the next one replaces it",
                        self.directory,
                        step,
                    )
                    self._pending = None
                    return
                log.warning("saving checkpoint %s/%d again", self.directory, step)
            self._state = "running"
            try:
                self.manager.save(step, args=_composite_save(*items), force=True)
            except Exception:
                self._state = "failed"
                raise
        if block:
            try:
                self.manager.wait_until_finished()
            except Exception:
                self._state = "failed"
                raise
            self._pending = None

    def _discard_failed(self, step: int) -> None:
        """After a failed save of `step`: lets the failed manager's writes end (its background
        threads outlive the error it raised, and may even commit the step later), removes all
        the step wrote, and opens a fresh manager (a failed one re-raises on every wait)."""
        checkpointer = getattr(self.manager, "_checkpointer", None)  # no public handle on it
        with contextlib.suppress(Exception):
            checkpointer.wait_until_finished()
            checkpointer.close()
        if jax.process_index() == 0:  # before the save's own barrier: the others wait there
            for p in self.directory.iterdir():
                if p.name == str(step) or p.name.startswith(f"{step}.orbax-checkpoint-tmp"):
                    p.rmtree()
        self._open()

    def restore_latest(
        self, abstract_params: Any, abstract_opt_state: Any, model: dict | None = None
    ) -> tuple[int, Any, Any, dict, dict] | None:
        """(step, params, opt_state, data, meta) from the newest readable step, or None if none.

        A step written for another model (different param shapes) raises
        CheckpointMismatchError and changes nothing. A step whose files cannot be read is
        skipped for the previous one and, once a readable step is found, renamed to
        `<step>.corrupt-<time>`; if no step is readable, NoReadableCheckpointError (nothing
        renamed) rather than a silent restart from step 0.
        """
        params_io.quiet_item_metadata_warning()
        unreadable: list[tuple[int, str]] = []
        for step in reversed(self.all_steps()):
            step_dir = self.directory / str(step)
            try:
                stored = _stored_metadata(step_dir)
            except Exception as e:  # noqa: BLE001 - unreadable metadata: not a usable step
                unreadable.append((step, self._unreadable(step, e)))
                continue
            _check_matches(step_dir, stored, abstract_params, abstract_opt_state, model)
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
                _check_finite(out["params"], str(step_dir))
            except Exception as e:  # noqa: BLE001 - any failure means "not usable"
                unreadable.append((step, self._unreadable(step, e)))
                continue
            for bad, _ in unreadable:
                self._quarantine(bad)
            return step, out["params"], out["opt_state"], dict(out["data"]), dict(out["meta"])
        if unreadable:
            steps = ", ".join(str(s) for s, _ in unreadable)
            raise NoReadableCheckpointError(
                f"{self.directory}: every checkpoint (steps {steps}) is unreadable "
                f"(step {unreadable[0][0]}: {unreadable[0][1]}); nothing was renamed. Restore a "
                "good copy, or move them aside to start again from step 0"
            )
        return None

    def _unreadable(self, step: int, e: Exception) -> str:
        """Logs why a step cannot be used; returns that reason in one line."""
        reason = f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"
        log.warning("checkpoint %s/%d is unreadable (%s)", self.directory, step, reason)
        return reason

    def _quarantine(self, step: int) -> None:
        """Moves a bad step aside so a later save of the same step number can succeed."""
        src = self.directory / str(step)
        if jax.process_index() == 0 and src.exists():
            dst = self.directory / f"{step}.corrupt-{int(time.time())}"
            src.rename(dst)
            log.warning("moved unreadable checkpoint to %s", dst)
        self.manager.reload()

    def close(self) -> None:
        self.wait()
        self.manager.close()


def _composite_save(params: Any, opt_state: Any, data: dict, meta: dict) -> Any:
    return ocp.args.Composite(
        params=ocp.args.StandardSave(params),
        opt_state=ocp.args.StandardSave(opt_state),
        data=ocp.args.JsonSave(data),
        meta=ocp.args.JsonSave(meta),
    )


def _alive(tree: Any) -> bool:
    """Whether every array of `tree` still exists (a train step donates the state it got)."""
    return not any(isinstance(x, jax.Array) and x.is_deleted() for x in jax.tree.leaves(tree))


def _check_finite(tree: Any, where: str) -> None:
    for leaf in jax.tree.leaves(tree):
        if not bool(np.isfinite(np.asarray(jax.device_get(leaf), np.float32)).all()):
            raise ValueError(f"non-finite values in checkpoint {where}")


def _stored_metadata(step_dir: Path) -> dict:
    """The meta JSON and the stored params/opt_state array metadata of one step."""
    out = {"meta": read_meta(step_dir)}
    for item in ("params", "opt_state"):
        tree = params_io.tree_metadata(step_dir / item)
        if not any(hasattr(x, "shape") for x in jax.tree.leaves(tree)):
            raise ValueError(f"{step_dir / item}: no readable array metadata")
        out[item] = tree
    return out


def _check_matches(
    step_dir: Path, stored: dict, abstract_params: Any, abstract_opt: Any, model: dict | None
) -> None:
    """Raises CheckpointMismatchError when the step's arrays do not fit the model's."""
    why = _params_differ(stored["params"], abstract_params) or _shapes_differ(
        stored["opt_state"], abstract_opt, "optimizer state"
    )
    if why is None:
        return
    saved = stored["meta"].get("model")
    if isinstance(saved, dict) and isinstance(model, dict):
        diffs = [k for k in model if k in saved and saved[k] != model[k]]
        if diffs:
            why = "; ".join(f"has {k} {saved[k]}, the model {model[k]}" for k in diffs)
    raise CheckpointMismatchError(
        f"checkpoint {step_dir.name} in {step_dir.parent} {why}: it was written for another "
        "model. Resume with the same model config, use a new MODEL_DIR, or start from these "
        "weights with INITIAL_CHECKPOINT_PATH"
    )


def _params_differ(stored: Any, abstract: Any) -> str | None:
    """The first param whose presence or shape differs, as words; None if all match."""
    got = {jax.tree_util.keystr(k): v for k, v in jax.tree_util.tree_flatten_with_path(stored)[0]}
    want = {
        jax.tree_util.keystr(k): v for k, v in jax.tree_util.tree_flatten_with_path(abstract)[0]
    }
    for k in sorted(set(got) | set(want)):
        if k not in got:
            return f"has no param {k}"
        if k not in want:
            return f"has param {k} the model lacks"
        if tuple(got[k].shape) != tuple(want[k].shape):
            return f"has {k} of shape {tuple(got[k].shape)}, the model {tuple(want[k].shape)}"
    return None


def _shapes_differ(stored: Any, abstract: Any, what: str) -> str | None:
    """Compares the multiset of array shapes (container types differ once stored)."""
    got = sorted(tuple(x.shape) for x in jax.tree.leaves(stored) if hasattr(x, "shape"))
    want = sorted(tuple(x.shape) for x in jax.tree.leaves(abstract) if hasattr(x, "shape"))
    return None if got == want else f"has a different {what} ({len(got)} vs {len(want)} arrays)"


def read_meta(step_dir: PathLike) -> dict:
    """The JSON meta item of a trainer step directory."""
    p = as_path(step_dir) / "meta" / "metadata"
    if not p.exists():
        raise FileNotFoundError(f"{step_dir}: not a trainer checkpoint step (no meta/metadata)")
    return json.loads(p.read_text())


def restore_item(step_dir: PathLike, name: str, abstract: Any) -> Any:
    """One pytree item (`params`, `opt_state`) of a trainer step, restored onto `abstract`."""
    params_io.quiet_item_metadata_warning()
    with ocp.StandardCheckpointer() as checkpointer:
        return checkpointer.restore(as_path(step_dir) / name, abstract)


def is_trainer_step_dir(path: PathLike) -> bool:
    p = as_path(path)
    return (p / "params").is_dir() and (p / "meta").is_dir()


def trainer_steps(base: PathLike) -> list[int]:
    """Steps of the trainer step directories directly under `base`, ascending."""
    base = as_path(base)
    if not base.is_dir():
        return []
    return sorted(
        int(c.name) for c in base.iterdir() if c.name.isdigit() and is_trainer_step_dir(c)
    )


def resolve_step_dir(path: PathLike) -> Path | None:
    """A trainer step dir for `path` being a step dir, a checkpoints dir or a model dir."""
    p = as_path(path)
    if is_trainer_step_dir(p):
        return p
    for base in (p / CHECKPOINT_SUBDIR, p):
        steps = trainer_steps(base)
        if steps:
            return base / str(steps[-1])
    return None
