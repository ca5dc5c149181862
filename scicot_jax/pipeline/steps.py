"""Resumable pipeline steps: each step owns a directory in the run dir and a DONE marker.

A step whose ``<run_dir>/<name>/DONE.json`` exists is skipped and its recorded result returned,
once the size and SHA-256 of every file it wrote (recorded in the marker) still match; a damaged
output or marker makes the step run again from scratch, naming the file.
A step that crashed part-way has a directory but no marker and runs again; steps that can
resume internally (the teacher's exactly-once store, the trainer's checkpoints) pick up there.
The marker records a fingerprint of the step's inputs: re-running a finished step with
different inputs is an error rather than a silent reuse of stale artifacts.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from scicot_jax.files import atomic_write, is_in_flight

MARKER = "DONE.json"


class StepInputsChanged(RuntimeError):
    """A finished step is asked to run again with different inputs."""


def fingerprint(inputs: Any) -> str:
    """Stable short hash of JSON-serialisable step inputs."""
    blob = json.dumps(inputs, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


def _write_json_atomic(path: Path, obj: Any) -> None:
    atomic_write(path, json.dumps(obj, indent=2, default=str) + "\n")


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _outputs(d: Path) -> list[Path]:
    # lock files hold no result and are recreated by readers; a temp file is another pod
    # process's write of the same output still in flight (it may vanish while listed)
    return sorted(
        p
        for p in d.rglob("*")
        if p.is_file() and p.name != MARKER and not p.name.endswith(".lock") and not is_in_flight(p)
    )


def output_records(d: Path) -> dict[str, list]:
    """{path relative to the step dir: [size, sha256]} of every file the step wrote."""
    return {str(p.relative_to(d)): [p.stat().st_size, _sha256(p)] for p in _outputs(d)}


def damaged(d: Path) -> str | None:
    """Why the finished step in `d` cannot be trusted (its DONE.json or an output it recorded
    is damaged or missing), or None. Files added after the step finished are not its outputs."""
    marker = d / MARKER
    try:
        done = json.loads(marker.read_text())
        if not isinstance(done, dict) or not isinstance(done.get("result"), dict):
            raise ValueError("not a step record")
        float(done["seconds"])
        str(done["fingerprint"])
    except (ValueError, KeyError, TypeError, UnicodeDecodeError) as e:
        return f"{marker} is damaged ({type(e).__name__}: {' '.join(str(e).split())[:120]})"
    records = done.get("outputs")
    if records is None:  # written before steps recorded their outputs: nothing to check
        return None
    if not isinstance(records, dict):
        return f"{marker} is damaged (outputs is not a mapping)"
    for rel, rec in records.items():
        p = d / rel
        if not p.is_file():
            return f"{p} is missing"
        try:
            size, digest = rec
        except (TypeError, ValueError):
            return f"{marker} is damaged (outputs[{rel!r}] is {rec!r})"
        if p.stat().st_size != size:
            return f"{p} is damaged ({p.stat().st_size} bytes, {size} when the step finished)"
        if _sha256(p) != digest:
            return f"{p} is damaged (its SHA-256 differs from the one recorded when it finished)"
    return None


class StepRunner:
    """Runs named steps inside ``run_dir``, skipping those already finished."""

    def __init__(
        self,
        run_dir: str | Path,
        log: Callable[[str], None] = print,
        redo: tuple[str, ...] = (),
        after_step: Callable[[], None] | None = None,  # e.g. push a mirrored run dir
    ):
        self.run_dir = Path(run_dir)
        self.after_step = after_step
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.log = log
        self.redo = set(redo)
        self.timings: dict[str, float] = {}  # seconds each step took when it ran (recorded)
        self.skipped: list[str] = []

    def step_dir(self, name: str) -> Path:
        return self.run_dir / name

    def is_done(self, name: str) -> bool:
        return (self.step_dir(name) / MARKER).exists()

    def run(self, name: str, fn: Callable[[Path], dict], inputs: Any = None) -> dict:
        """Return ``fn(step_dir)``'s result dict, or the recorded one if the step is finished."""
        d = self.step_dir(name)
        marker = d / MARKER
        fp = fingerprint(inputs)
        if name in self.redo and d.exists():
            shutil.rmtree(d)
        damage = damaged(d) if marker.exists() else None
        if damage:  # a finished step whose outputs no longer prove themselves: run it again
            self.log(f"[redo] {name}: {damage}")
            shutil.rmtree(d)
        if marker.exists():
            done = json.loads(marker.read_text())
            if done.get("fingerprint") != fp:
                raise StepInputsChanged(
                    f"step {name!r} in {d} finished with other inputs "
                    f"({done.get('fingerprint')} != {fp}); delete that directory or pass "
                    f"--redo {name}"
                )
            self.skipped.append(name)
            self.timings[name] = done["seconds"]
            self.log(f"[skip] {name} (finished in {done['seconds']:.1f}s)")
            return done["result"]
        d.mkdir(parents=True, exist_ok=True)
        self.log(f"[step] {name}")
        t0 = time.time()
        result = fn(d)
        seconds = time.time() - t0
        if not isinstance(result, dict):
            raise TypeError(f"step {name!r} must return a dict, got {type(result).__name__}")
        _write_json_atomic(
            marker,
            {
                "name": name,
                "fingerprint": fp,
                "seconds": seconds,
                "finished": time.strftime("%Y-%m-%dT%H:%M:%S"),
                "result": result,
                "outputs": output_records(d),
            },
        )
        self.timings[name] = seconds
        self.log(f"[done] {name} in {seconds:.1f}s")
        if self.after_step is not None:
            self.after_step()
        return json.loads(json.dumps(result, default=str))

    def run_on_process_zero(
        self, name: str, fn: Callable[[Path], dict], inputs: Any = None
    ) -> dict:
        """`run` on process 0 of a pod only; the others wait for it and read its recorded result.

        For steps that must happen once (a paid teacher). The run dir must be shared by all
        hosts (e.g. gs://); with one process this is plain `run`.
        """
        import jax

        if jax.process_count() == 1:
            return self.run(name, fn, inputs)
        from jax.experimental import multihost_utils

        result, error = None, None
        if jax.process_index() == 0:
            try:
                result = self.run(name, fn, inputs)
            except Exception as e:  # noqa: BLE001 - re-raised below, after the others are released
                error = e
        multihost_utils.sync_global_devices(f"pipeline step {name}")
        if error is not None:
            raise error
        if result is None:
            marker = self.step_dir(name) / MARKER
            if not marker.exists():
                raise RuntimeError(
                    f"process {jax.process_index()}: no {marker} after process 0 ran step "
                    f"{name!r}; on a pod the run dir must be shared by all hosts (e.g. gs://)"
                )
            done = json.loads(marker.read_text())
            if done.get("fingerprint") != fingerprint(inputs):
                raise StepInputsChanged(
                    f"step {name!r} in {marker.parent}: process 0 ran other inputs"
                )
            result = done["result"]
        return result
