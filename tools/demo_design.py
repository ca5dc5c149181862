"""Design experiments of the demo: run ``demo_config`` with knobs over seeds, print a table.

  demo_design.py --out runs/design --tag A --seeds 0,1,2 [--split validation] [KNOB=VALUE ...]
  demo_design.py --out runs/design --tag keep3 --share-from A --methods ARMS keep=3

Each run goes to ``<out>/runs/<tag>_s<seed>`` (resumable: finished steps are skipped). The table
is the accuracy (percent) of each arm per seed on ``--split`` (designs are chosen on validation
with seeds 0-2; test accuracy of seeds 3-5 is what docs/demo.md reports), with the share of
flawed and rationalised rationales each arm trained on.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from scicot_jax.pipeline.demo import DESIGN, demo_config, run  # noqa: E402


def _knob(text: str) -> tuple[str, object]:
    key, _, value = text.partition("=")
    if key not in DESIGN:
        raise SystemExit(f"demo_design.py: unknown knob {key!r}; known: {sorted(DESIGN)}")
    kind = type(DESIGN[key])
    return key, kind(value)


SHARED = ("data", "vocab", "teacher_", "probe")


def share(src: Path, dest: Path) -> None:
    """Copy ``src``'s finished shared steps (data, teacher runs, vocabulary, MoRSD's probes)
    that ``dest`` lacks: they are skipped there, as in their own run."""
    dest.mkdir(parents=True, exist_ok=True)
    for d in sorted(src.iterdir()) if src.is_dir() else ():
        done = (d / "DONE.json").exists() and not (dest / d.name).exists()
        if done and (d.name in SHARED or d.name.startswith(SHARED[2:])):
            shutil.copytree(d, dest / d.name, symlinks=True)


def table(out: str, tag: str, seeds: list[int], split: str) -> str:
    """Markdown: arm x seed accuracy on ``split``, and the kept set's flaw shares."""
    rows: dict[str, dict[int, str]] = {}
    for seed in seeds:
        path = Path(out) / "runs" / f"{tag}_s{seed}" / "results.json"
        if not path.exists():
            continue
        for label, m in json.loads(path.read_text())["methods"].items():
            f = (m.get("selection_summary") or {}).get("flaws") or {}
            flaw = (
                f" ({100 * f['flawed_share_kept']:.0f}/{100 * f['rationalised_share_kept']:.0f})"
                if f
                else ""
            )
            rows.setdefault(label, {})[seed] = f"{m['accuracy'][split]:.1f}{flaw}"
    lines = [
        f"{tag}: {split} accuracy % per seed (kept rationales: % flawed / % rationalised)",
        "",
        "| method | " + " | ".join(f"seed {s}" for s in seeds) + " |",
        "|---|" + "---:|" * len(seeds),
    ]
    for label, accs in rows.items():
        lines.append(f"| {label} | " + " | ".join(accs.get(s, "") for s in seeds) + " |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--out", default="runs/design")
    p.add_argument("--tag", required=True, help="name of this design point")
    p.add_argument("--seeds", default="0,1,2")
    p.add_argument("--split", default="validation", choices=("validation", "test"))
    p.add_argument("--report", action="store_true", help="only print the table")
    p.add_argument(
        "--jobs", type=int, default=2, help="methods at once, single-threaded worker processes"
    )
    p.add_argument(
        "--methods",
        help="comma list of the demo's arms to run (default: all; the data, teacher and "
        "vocabulary steps stay the whole demo's), e.g. only the selecting arms for the keep knob",
    )
    p.add_argument(
        "--share-from",
        metavar="TAG",
        help="copy the finished data, teacher, vocabulary and probe steps of TAG's run of each "
        "seed first (for knobs those steps do not read, e.g. keep; a step whose inputs differ "
        "stops the run, naming it)",
    )
    p.add_argument("knobs", nargs="*", help=f"KNOB=VALUE, knobs: {', '.join(DESIGN)}")
    args = p.parse_args(argv)
    seeds = [int(s) for s in args.seeds.split(",") if s]
    knobs = dict(_knob(k) for k in args.knobs)
    if not args.report:
        for seed in seeds:
            run_dir = Path(args.out) / "runs" / f"{args.tag}_s{seed}"
            if args.share_from:
                share(Path(args.out) / "runs" / f"{args.share_from}_s{seed}", run_dir)
            only = args.methods.split(",") if args.methods else None
            run(demo_config(str(run_dir), seed, **knobs), args.jobs, only=only)
    print(table(args.out, args.tag, seeds, args.split))
    return 0


if __name__ == "__main__":
    sys.exit(main())
