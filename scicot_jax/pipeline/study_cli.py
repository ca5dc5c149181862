"""Command line of the scaling study (``tools/scaling_study.py``).

  scaling_study.py plan   --out STUDY [axes] [--tpu-name ...] -- PIPELINE_ARGS   (write commands)
  scaling_study.py run    --out STUDY [axes] -- PIPELINE_ARGS    (run locally in sequence, report)
  scaling_study.py report STUDY [--out DIR]                      (collect results, CSV/MD/PNG)

PIPELINE_ARGS are the ``run_pipeline.py run`` arguments shared by every run (task, teacher,
steps, ``--student.gin KEY=VALUE`` ...); the study adds ``--methods``, ``--train_fraction``,
``--student.size`` and ``--out`` per run. ``--demo-base`` sweeps the demo's design (``pipeline.demo.demo_config``) over D: one run
directory per (seed, D) holding every method, the D = 4 ones being the demo's runs.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from scicot_jax.clihelp import show_defaults
from scicot_jax.pipeline import demo, study

# XLA on CPU in one thread: a tiny student gains little from a second core, so parallel runs
# (--jobs) each take one.
ONE_THREAD = {
    "XLA_FLAGS": "--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1",
    "OMP_NUM_THREADS": "1",
}


def _csv(kind):
    return lambda s: [kind(x) for x in s.split(",") if x]


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="scaling_study.py",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = p.add_subparsers(dest="cmd", required=True)
    for name in ("plan", "run"):
        s = sub.add_parser(name)
        s.add_argument("--out", required=True, help="study directory")
        s.add_argument(
            "--methods",
            type=_csv(str),
            default=["finetune_cot", "scicot"],
            help="comma list: baseline, finetune_cot, scicot, with optional +morsd",
        )
        s.add_argument("--degrees", type=_csv(int), default=[1, 2, 4])
        s.add_argument("--fractions", type=_csv(float), default=[1.0])
        s.add_argument(
            "--seeds",
            type=int,
            default=1,
            help="run every point with seeds 0..N-1 (teacher failures, data, student)",
        )
        s.add_argument(
            "--seed-ids",
            type=_csv(int),
            help="comma list of seeds instead of 0..N-1 (e.g. the demo's reported 3,4,5)",
        )
        s.add_argument(
            "--students",
            type=_csv(str),
            default=["tiny"],
            help="model presets (tiny, small, base, ...)",
        )
        s.add_argument(
            "--demo-base",
            action="store_true",
            help="the demo's design swept over D: per (seed, D) one run of every method "
            "(STUDY/configs/<run>.json); selecting arms keep half of D (the demo's 2 of 4), "
            "so the D = 4 runs are the demo's; at D = 1 they equal Sci-CoT and are not run",
        )
        s.add_argument(
            "--knob",
            action="append",
            default=[],
            metavar="KEY=VALUE",
            help="with --demo-base: a demo design knob (pipeline.demo.DESIGN)",
        )
        if name == "run":
            s.add_argument(
                "--jobs",
                type=int,
                default=1,
                help="runs at once, each in its own single-threaded process (> 1: subprocesses)",
            )
        if name == "plan":
            s.add_argument("--python", default="python")
            s.add_argument("--tpu-name", help="Cloud TPU VM: wrap each line in gcloud ... ssh")
            s.add_argument("--zone")
            s.add_argument("--project")
            s.add_argument("--repo-dir", default="~/scicot_jax", help="repo on the TPU workers")
            s.add_argument("--gcs-dir", help="gs:// folder each finished run is copied to")
    r = sub.add_parser("report")
    r.add_argument("study_dir", help="study directory, or a study.csv to remake its files from")
    r.add_argument("--out", help="write the CSV, study.md and PNGs here (default: STUDY)")
    return show_defaults(p)


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    base_args: list[str] = []
    if "--" in argv:
        cut = argv.index("--")
        argv, base_args = argv[:cut], argv[cut + 1 :]
    args = _parser().parse_args(argv)
    if args.cmd == "report":
        return _report(args.study_dir, args.out)
    seeds = args.seed_ids or list(range(args.seeds))
    if args.demo_base:
        runs = demo.demo_plan(args.out, args.methods, args.degrees, seeds, _knobs(args.knob))
    else:
        runs = study.plan(args.methods, args.degrees, args.fractions, args.students, seeds)
    if args.cmd == "plan":
        tpu = None
        if args.tpu_name:
            if not args.zone:
                raise SystemExit("--tpu-name needs --zone")
            tpu = study.TpuTarget(
                args.tpu_name, args.zone, args.project, args.repo_dir, gcs_dir=args.gcs_dir
            )
        lines = study.commands(runs, args.out, base_args, tpu=tpu, python=args.python)
        script = study.write_plan(args.out, runs, lines)
        print("\n".join(lines))
        print(f"# {len(lines)} runs written to {script}", file=sys.stderr)
        return 0
    from scicot_jax.pipeline import cli

    if args.jobs > 1:
        lines = study.commands(runs, args.out, base_args, python=sys.executable)
        study.write_plan(args.out, runs, lines)
        status = study.run_parallel(runs, args.out, lines, args.jobs, env=ONE_THREAD)
    else:
        study.write_plan(args.out, runs, study.commands(runs, args.out, base_args))
        status = study.run_local(runs, args.out, base_args, cli.main)
    _report(args.out)
    return 0 if all(v == "ok" for v in status.values()) else 1


def _knobs(knobs: Sequence[str]) -> dict:
    """``--knob KEY=VALUE`` texts as demo design values (``pipeline.demo.DESIGN``)."""
    from scicot_jax.pipeline.demo import DESIGN

    values = {}
    for text in knobs:
        key, _, value = text.partition("=")
        if key not in DESIGN or key == "keep":
            raise SystemExit(
                f"scaling_study.py: unknown --knob {key!r} (keep is half of D); "
                f"known: {sorted(set(DESIGN) - {'keep'})}"
            )
        values[key] = type(DESIGN[key])(value)
    return values


def _report(study_dir: str, out: str | None = None) -> int:
    is_csv = study_dir.endswith(".csv")
    rows = study.read_rows(study_dir) if is_csv else study.collect(study_dir)
    if not rows:
        print(f"no results.json under {study_dir}/runs/*", file=sys.stderr)
        return 1
    if is_csv and not out:
        raise SystemExit("scaling_study.py report: from a study.csv, give --out DIR")
    paths = study.render(rows, out or study_dir)
    print(paths["md"].read_text())
    for key, path in paths.items():
        print(f"{key}: {path}")
    return 0
