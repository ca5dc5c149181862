"""A run's independent parts (each method, each MoRSD probe) in worker processes, N at once.

On 2 CPU cores a tiny student gains little from XLA's second thread: two single-threaded
processes, each training its own method, finish a run sooner than one process doing the methods
one after another. The parent runs the shared steps (data, teacher, vocabulary); each worker
then runs one part's steps in the same run directory, steps no other worker touches; a final
in-process pass skips every finished step and writes results.json and results.md as a
sequential run does. The steps are the pipeline's own, so the run directory's layout and the
skipping of finished steps are unchanged; workers' output goes to ``<run>/logs/<part>.log``.

  python -m scicot_jax.pipeline.arms CONFIG.json PART     (one worker: what run_arms starts)
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from scicot_jax.pipeline import results, step_names
from scicot_jax.pipeline.config import PipelineConfig
from scicot_jax.pipeline.run import Pipeline

# XLA on CPU in one thread per worker (the workers are the parallelism).
ONE_THREAD_XLA = "--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1"
LOGS = "logs"
# Relative CPU cost of a method's own steps (measured on the demo: baseline 44 s, Fine-tune-CoT
# 99, Sci-CoT 145-155, MoRSD after its probes 260, a probe 50): the longest path starts first.
COST = {"baseline": 1.0, "finetune_cot": 2.2, "scicot": 3.4, "morsd": 5.9, "probe": 1.1}


@dataclass(frozen=True)
class Part:
    """One unit of work for a worker."""

    name: str  # a method's label, or a probe's step name
    slug: str  # its log's name: logs/<slug>.log
    done: str  # the step whose DONE.json means the part is finished (its last step)
    after: tuple[str, ...] = ()  # parts that must finish first
    cost: float = 1.0


def parts(p: Pipeline) -> list[Part]:
    """The run's parts: every method, and each MoRSD probe pair (shared by the methods that
    score with it) ahead of the methods that need it."""
    cfg = p.cfg
    out: dict[str, Part] = {}
    methods = []
    for spec in cfg.method_specs():
        probes: tuple[str, ...] = ()
        if spec.morsd and cfg.selection.use_difficulty and not cfg.student.init_checkpoint:
            key = p.prompt_of(spec)
            probes = tuple(step_names.probe(h, key, spec.degree) for h in (0, 1))
            for name in probes:
                out.setdefault(name, Part(name, name, name, cost=COST["probe"]))
        cost = COST["morsd"] if spec.morsd else COST.get(spec.method, 1.0)
        methods.append(Part(spec.label, spec.slug, step_names.evaluation(spec.slug), probes, cost))
    return [*out.values(), *methods]


def _priority(todo: Sequence[Part]) -> dict[str, float]:
    """A part's cost plus the costliest chain of parts waiting on it (critical path first)."""
    after = {q.name: q for q in todo}
    memo: dict[str, float] = {}

    def chain(name: str) -> float:
        if name not in memo:
            waiting = [q for q in todo if name in q.after]
            memo[name] = after[name].cost + max((chain(q.name) for q in waiting), default=0.0)
        return memo[name]

    return {q.name: chain(q.name) for q in todo}


def run_part(cfg: PipelineConfig, name: str, log: Callable[[str], None] = print) -> None:
    """One part's steps (a worker): the shared steps are finished and skipped."""
    from scicot_jax.pipeline import methods
    from scicot_jax.pipeline.student import T5Student

    p = Pipeline(cfg, T5Student(cfg.student, task=cfg.task, seed=cfg.seed), log=log)
    p.shared()
    for spec in p.specs:
        if spec.label == name:
            p._method(spec)
            return
        for h in (0, 1) if spec.morsd else ():
            key = p.prompt_of(spec)
            if name == step_names.probe(h, key, spec.degree):
                methods.MoRSD().probe(p, key, spec.degree, h)
                return
    raise ValueError(f"no part {name!r} in {[q.name for q in parts(p)]}")


def _worker_env() -> dict:
    import scicot_jax

    env = dict(os.environ)
    root = str(Path(scicot_jax.__file__).resolve().parents[1])
    env["PYTHONPATH"] = os.pathsep.join(x for x in (root, env.get("PYTHONPATH")) if x)
    env["XLA_FLAGS"] = f"{env.get('XLA_FLAGS', '')} {ONE_THREAD_XLA}".strip()
    env["OMP_NUM_THREADS"] = "1"
    return env


def run_arms(
    cfg: PipelineConfig,
    jobs: int = 2,
    redo: Sequence[str] = (),
    log: Callable[[str], None] = print,
    only: Sequence[str] | None = None,
) -> dict:
    """Run ``cfg`` with its parts in ``jobs`` worker processes; results as ``run_pipeline``.

    ``redo`` steps are removed first (each is then run once, by whichever process owns it).
    ``only``: the labels of the methods to run (and the probes they need); the shared steps
    stay those of every configured method, so a design experiment shares them with full runs."""
    from scicot_jax.pipeline.student import T5Student

    t0 = time.time()
    run_dir = Path(cfg.out)
    for name in redo:
        shutil.rmtree(run_dir / name, ignore_errors=True)
    student = T5Student(cfg.student, task=cfg.task, seed=cfg.seed)
    first = Pipeline(cfg, student, log=log)
    cfg.save(run_dir / "config.json")
    first.shared()
    wanted = parts(first)
    if only is not None:
        needs = {a for q in wanted if q.name in only for a in q.after}
        wanted = [q for q in wanted if q.name in only or q.name in needs]
    todo = [q for q in wanted if _to_do(q, run_dir, redo)]
    schedule(todo, run_dir, jobs, log)
    res = Pipeline(cfg, student, log=log).run(only)  # every step finished: skipped
    _count_probes(res, wanted, run_dir)
    res["wall_seconds"] = round(time.time() - t0, 1)
    res["workers"] = jobs
    results.write(run_dir, res)
    return res


def _count_probes(res: dict, all_parts: Sequence[Part], run_dir: Path) -> None:
    """The final pass skips MoRSD's finished select step, and with it the probe steps it would
    call: list them and add their seconds to the methods that used them, as a run in one
    process does."""
    for q in all_parts:
        missing = [a for a in q.after if a not in res["steps"]]
        for name in missing:
            res["steps"][name] = json.loads((run_dir / name / "DONE.json").read_text())["seconds"]
            res["skipped_steps"].append(name)
        if q.name in res["methods"] and missing:  # the first method to use them, as in one process
            m = res["methods"][q.name]
            m["seconds"] = round(m["seconds"] + sum(res["steps"][a] for a in missing), 1)


def _to_do(q: Part, run_dir: Path, redo: Sequence[str]) -> bool:
    """Whether part ``q`` has work left: its last step unfinished, or a step of its own
    (``<kind>_<slug>``, a probe's own name) asked to be redone."""
    mine = any(s == q.slug or s.endswith(f"_{q.slug}") for s in redo)
    return mine or not (run_dir / q.done / "DONE.json").exists()


def worker_command(run_dir: Path, part: Part) -> list[str]:
    """The worker process of ``part``: this module's ``main`` on the run's config.json."""
    return [
        sys.executable,
        "-m",
        "scicot_jax.pipeline.arms",
        str(run_dir / "config.json"),
        part.name,
    ]


def schedule(
    todo: Sequence[Part],
    run_dir: Path,
    jobs: int,
    log: Callable[[str], None] = print,
    command: Callable[[Path, Part], list[str]] = worker_command,
) -> None:
    """Start ready parts, highest priority first, ``jobs`` at a time, each ``command``'s
    process; the first failure stops new starts and is raised (naming the part's log) once
    the running ones finish."""
    prio = _priority(todo)
    pending = sorted(todo, key=lambda q: -prio[q.name])
    names = {q.name for q in todo}
    finished: set[str] = set()
    failed: list[str] = []
    running: dict[str, tuple[Part, subprocess.Popen, float]] = {}
    (run_dir / LOGS).mkdir(exist_ok=True)
    env = _worker_env()
    try:
        while pending or running:
            for name, (q, proc, t0) in list(running.items()):
                if proc.poll() is None:
                    continue
                del running[name]
                if proc.returncode == 0:
                    finished.add(name)
                    log(f"[arms] {name} finished in {time.time() - t0:.0f}s")
                    continue
                path = run_dir / LOGS / f"{q.slug}.log"
                tail = path.read_text(errors="replace").splitlines()[-15:]
                log("\n".join([f"[arms] {name} failed (exit {proc.returncode}):", *tail]))
                failed.append(f"{name} (exit {proc.returncode}, log {path})")
            while not failed and len(running) < jobs:
                ready = [
                    q for q in pending if all(a in finished or a not in names for a in q.after)
                ]
                if not ready:
                    break
                q = ready[0]
                pending.remove(q)
                with open(run_dir / LOGS / f"{q.slug}.log", "ab") as f:
                    proc = subprocess.Popen(
                        command(run_dir, q),
                        stdout=f,
                        stderr=subprocess.STDOUT,
                        env=env,
                    )
                running[q.name] = (q, proc, time.time())
                log(f"[arms] {q.name} started ({len(running)} running, {len(pending)} waiting)")
            if failed and not running:
                break
            time.sleep(0.5)
    finally:  # interrupted: no worker outlives the run
        for _, proc, _ in running.values():
            proc.terminate()
        for _, proc, _ in running.values():
            proc.wait()
    if failed:
        raise RuntimeError(f"run {run_dir}: {'; '.join(failed)}")


def main(argv: Sequence[str] | None = None) -> int:
    """A worker: ``CONFIG.json PART``."""
    cfg_path, name = list(sys.argv[1:] if argv is None else argv)
    cfg = PipelineConfig.from_dict(json.loads(Path(cfg_path).read_text()))
    run_part(cfg, name, log=lambda s: print(s, flush=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())
