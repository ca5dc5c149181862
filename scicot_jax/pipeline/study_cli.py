"""Command line of the scaling study (``tools/scaling_study.py``).

  scaling_study.py plan   --out STUDY [axes] [--tpu-name ...] -- PIPELINE_ARGS   (write commands)
  scaling_study.py run    --out STUDY [axes] -- PIPELINE_ARGS    (run locally in sequence, report)
  scaling_study.py report STUDY                                  (collect results, CSV/MD/PNG)

PIPELINE_ARGS are the ``run_pipeline.py run`` arguments shared by every run (task, teacher,
steps, ``--gin KEY=VALUE`` ...); the study adds ``--methods``, ``--train-fraction``,
``--student`` and ``--out`` per run. ``--demo-base [--knob KEY=VALUE ...]`` starts every run
from the demo's configuration (``pipeline.demo.demo_config``, written to
``STUDY/base_config.json``; PIPELINE_ARGS still override it).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from scicot_jax.clihelp import show_defaults
from scicot_jax.pipeline import study


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
            "--students",
            type=_csv(str),
            default=["tiny"],
            help="model presets (tiny, small, base, ...)",
        )
        s.add_argument(
            "--demo-base",
            action="store_true",
            help="start every run from the demo's config (STUDY/base_config.json)",
        )
        s.add_argument(
            "--knob",
            action="append",
            default=[],
            metavar="KEY=VALUE",
            help="with --demo-base: a demo design knob (pipeline.demo.DESIGN)",
        )
        if name == "plan":
            s.add_argument("--python", default="python")
            s.add_argument("--tpu-name", help="Cloud TPU VM: wrap each line in gcloud ... ssh")
            s.add_argument("--zone")
            s.add_argument("--project")
            s.add_argument("--repo-dir", default="~/scicot_jax", help="repo on the TPU workers")
            s.add_argument("--gcs-dir", help="gs:// folder each finished run is copied to")
    r = sub.add_parser("report")
    r.add_argument("study_dir")
    return show_defaults(p)


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    base_args: list[str] = []
    if "--" in argv:
        cut = argv.index("--")
        argv, base_args = argv[:cut], argv[cut + 1 :]
    args = _parser().parse_args(argv)
    if args.cmd == "report":
        return _report(args.study_dir)
    if args.demo_base:
        base_args = ["--config", str(_demo_base(args.out, args.knob)), *base_args]
    runs = study.plan(args.methods, args.degrees, args.fractions, args.students, range(args.seeds))
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

    study.write_plan(args.out, runs, study.commands(runs, args.out, base_args))
    status = study.run_local(runs, args.out, base_args, cli.main)
    _report(args.out)
    return 0 if all(v == "ok" for v in status.values()) else 1


def _demo_base(out: str, knobs: Sequence[str]) -> Path:
    """Write the demo's config (with ``knobs``) as the study's base config; its path."""
    from scicot_jax.pipeline.demo import DESIGN, demo_config

    values = {}
    for text in knobs:
        key, _, value = text.partition("=")
        if key not in DESIGN:
            raise SystemExit(f"scaling_study.py: unknown --knob {key!r}; known: {sorted(DESIGN)}")
        values[key] = type(DESIGN[key])(value)
    path = Path(out) / "base_config.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    demo_config(str(Path(out) / "runs" / "base"), **values).save(path)
    return path


def _report(study_dir: str) -> int:
    rows = study.collect(study_dir)
    if not rows:
        print(f"no results.json under {study_dir}/runs/*", file=sys.stderr)
        return 1
    paths = study.render(rows, study_dir)
    print(paths["md"].read_text())
    for key, path in paths.items():
        print(f"{key}: {path}")
    return 0
