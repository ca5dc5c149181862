"""Command line of the pipeline (``tools/run_pipeline.py``).

  run_pipeline.py run  --task CARD --out RUN_DIR [--methods baseline,finetune_cot:4,scicot+morsd:4]
                       [--teacher.backend oracle|replay|gemini|openai|import ...]
                       [--student.size tiny ...] [--selection.per_question 1 ...]
  run_pipeline.py demo [--out runs/demo]     (synthetic_compass, oracle teacher, tiny T5 on CPU)

A run directory is resumable: running the same command again skips finished steps.
Each setting of pipeline.config is one flag of the same name: --FIELD for the run's own,
--teacher.FIELD, --student.FIELD and --selection.FIELD for its parts.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
import time
from collections.abc import Iterator, Sequence

from scicot_jax import platforms
from scicot_jax.clihelp import show_defaults
from scicot_jax.paths import as_path
from scicot_jax.pipeline import flags, owner, presets
from scicot_jax.pipeline.budget import PAPER_EPOCHS
from scicot_jax.pipeline.config import PipelineConfig, StudentConfig, TeacherConfig
from scicot_jax.runtime import deadlines, quiet_failure
from scicot_jax.runtime.gin_utils import setup_logging
from scicot_jax.selection import SelectionConfig

# Fields set another way than by their own flag: the preset by --preset (it records the recipe
# applied); the selection's degree, order and seed by each method (pipeline.methods).
NOT_FLAGS = ("preset", "selection.max_degree", "selection.random_order", "selection.seed")


def _add_run_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", help="JSON config (a run's config.json); flags override it")
    p.add_argument(
        "--preset",
        choices=sorted(presets.PRESETS),
        help="a paper's recipe for real cards (its methods and per-stage budgets; flags beside "
        "it override): " + presets.help_text(),
    )
    flags.add_flags(p, PipelineConfig, skip=NOT_FLAGS)
    p.add_argument(
        "--redo",
        action="append",
        default=[],
        metavar="STEP",
        help="re-run this step even if finished (repeatable)",
    )
    p.add_argument("-v", "--verbose", action="store_true")


def config_from_args(
    args: argparse.Namespace, base: PipelineConfig | None = None
) -> PipelineConfig:
    """Flags on top of ``base`` (or --config, or defaults); each flag sets its field."""
    top = flags.given(args, PipelineConfig)
    if base is None:
        if args.config:
            base = PipelineConfig.from_dict(json.loads(as_path(args.config).read_text()))
        else:
            if "task" not in top or "out" not in top:
                raise SystemExit("run: --task and --out are required (or --config)")
            base = PipelineConfig(task=top["task"], out=top["out"])
    if args.preset:
        base = presets.apply(base, args.preset)
    teacher = flags.given(args, TeacherConfig, "teacher.")
    if teacher.get("backend") in ("replay", "import") and "model" not in teacher:
        teacher["model"] = teacher["backend"]  # not the oracle's name on a replayed or imported run
    student = flags.given(args, StudentConfig, "student.")
    if "steps" in student and "epochs" not in student:
        student["epochs"] = None  # steps replace a configured epoch budget
    elif "steps" not in student and "epochs" not in student and base.student.epochs is None:
        if not base.preset:  # a preset's budget stands
            student["epochs"] = paper_epochs(top.get("task", base.task))
    sel = flags.given(args, SelectionConfig, "selection.")
    if sel.get("per_question") is not None:  # one of the two: the one given wins
        sel.setdefault("fraction", None)
    if sel.get("fraction") is not None:
        sel.setdefault("per_question", None)
    try:
        cfg = flags.merged(
            base,
            {
                **top,
                "teacher": flags.merged(base.teacher, teacher),
                "student": flags.merged(base.student, student),
                "selection": flags.merged(base.selection, sel),
            },
        )
        presets.check(cfg)
    except ValueError as e:
        raise SystemExit(f"run_pipeline.py: error: {e}") from None
    return cfg


def paper_epochs(task: str) -> float | None:
    """The published recipe's epochs for a card, where known (Fine-tune-CoT: 20)."""
    from scicot_jax.data.cards import load_card

    try:
        source = load_card(task).source.get("type")
    except (OSError, ValueError):
        return None  # a bad card is reported when the run reads it
    return PAPER_EPOCHS.get(source)


def _accuracy(args: argparse.Namespace) -> dict:
    """Accuracy recomputed from predictions files (and re-graded with the card's rules)."""
    from scicot_jax.data import grading

    rows = [r for path in args.predictions for r in grading.read_predictions(path)]
    out = {"from_correct": grading.accuracy_from_predictions(rows), "rows": len(rows)}
    if args.task:
        from scicot_jax.data.cards import load_card

        grader = grading.grader_for(load_card(args.task), args.kind)
        out["regraded"] = grading.accuracy_from_predictions(rows, grader)
    print(json.dumps(out, indent=2))
    return out


def _demo_seeds(args: argparse.Namespace) -> dict:
    """The demo once per seed, then the study report over the seeds (mean ± std, plots)."""
    from scicot_jax.pipeline import demo

    paths = demo.run_seeds(args.out, args.seeds, args.pack, args.redo, args.jobs)
    print(paths["md"].read_text())
    return {"summary": str(paths["summary"])}


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="run_pipeline.py",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = p.add_subparsers(dest="cmd", required=True)
    _add_run_args(
        sub.add_parser("run", help="run the pipeline on any task card", allow_abbrev=False)
    )
    a = sub.add_parser(
        "accuracy", help="recompute accuracy (percent per split) from predictions JSONL files"
    )
    a.add_argument("predictions", nargs="+", help="predictions_<split>.jsonl of an eval step")
    a.add_argument("--task", help="card: also re-grade every output with its rules")
    a.add_argument(
        "--kind",
        choices=("one_stage", "rationale", "answer", "teacher_step2"),
        default="answer",
        help="what the outputs are (with --task): one_stage for Fine-tune-CoT students",
    )
    d = sub.add_parser("demo", help="the embedded demo (no network, CPU, minutes)")
    d.add_argument("--out", default="runs/demo")
    d.add_argument("--seed", type=int, default=0)
    d.add_argument(
        "--seeds",
        type=lambda t: [int(x) for x in t.split(",") if x],
        help="comma list: run the demo with these seeds into OUT/runs/demo_s<seed> and report "
        "mean ± std (the README's spread: 3,4,5; the design was chosen on 0,1,2)",
    )
    d.add_argument("--redo", action="append", default=[], metavar="STEP")
    d.add_argument(
        "--pack", action="store_true", help="students train on packed rows (best-fit, fitted)"
    )
    d.add_argument(
        "--jobs",
        type=int,
        default=2,
        help="methods (and MoRSD's probes) at once, each in a single-threaded worker process "
        "(pipeline.arms); 1: one process, one method after another",
    )
    d.add_argument("-v", "--verbose", action="store_true")
    return show_defaults(p)


@contextlib.contextmanager
def _owning(out: str) -> Iterator[None]:
    """Process 0 owns --out for the run (owner.own); on a pod every process learns if it
    could not, and all stop with its message."""
    import jax

    from scicot_jax.runtime import multihost

    with contextlib.ExitStack() as stack:
        refused = None
        if jax.process_index() == 0:
            try:
                stack.enter_context(owner.own(out))
            except owner.RunDirBusy as e:
                refused = str(e)
        refused = multihost.allgather_objects(refused)[0]
        if refused:
            raise owner.RunDirBusy(refused)
        yield


def _fail(e: BaseException) -> None:
    """An expected failure: one line on stderr, exit 2 (README "Exit codes")."""
    print(f"run_pipeline.py: error: {' '.join(str(e).split())}", file=sys.stderr)
    raise SystemExit(2)


def _unknown(parser: argparse.ArgumentParser, unknown: list[str]) -> None:
    """Unknown arguments: one line, naming the flag nearest to each unknown one."""
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    run = sub.choices["run"]
    said = [
        f"{u} (did you mean {near}?)" if (near := flags.nearest_flag(run, u)) else u
        for u in unknown
    ]
    _fail(ValueError(f"unrecognized arguments: {' '.join(said)}; see run --help"))


def main(argv: Sequence[str] | None = None) -> dict:
    """Parse, run, print the results table and the run directory; returns the results."""
    platforms.keep_host_memory()  # it trains: before jax's CPU client starts its threads
    parser = _parser()
    args, unknown = parser.parse_known_args(list(sys.argv[1:] if argv is None else argv))
    if unknown:
        _unknown(parser, unknown)
    setup_logging("INFO" if getattr(args, "verbose", False) else "WARNING")
    if args.cmd == "accuracy":
        try:
            return _accuracy(args)
        except (ValueError, OSError) as e:  # a damaged predictions file: file:line, one line
            _fail(e)
    if args.cmd == "demo" and args.seeds:
        return _demo_seeds(args)
    if args.cmd == "demo":
        from scicot_jax.pipeline.demo import demo_config

        cfg = demo_config(args.out, args.seed, args.pack)
    else:
        cfg = config_from_args(args)
        try:  # before --out exists: a typo in a method or card name leaves nothing behind
            cfg.method_specs()
            from scicot_jax.data.cards import load_card

            load_card(cfg.task)
        except (ValueError, OSError) as e:
            _fail(e)
    from scicot_jax.data.sources import SourceError
    from scicot_jax.pipeline.run import run_pipeline
    from scicot_jax.runtime.partitioning import maybe_initialize_distributed

    maybe_initialize_distributed()  # on a pod (TPU VM workers, SLURM, ...): before any jax use
    t0 = time.time()
    quiet_failure.install()  # library errors in background threads: one line each
    try:
        with deadlines.watching("run_pipeline.py"), _owning(cfg.out):  # storage bounded
            if args.cmd == "demo":
                from scicot_jax.pipeline import demo

                res = demo.run(cfg, args.jobs, args.redo)
            else:
                res = run_pipeline(cfg, redo=tuple(args.redo))
    except SourceError as e:  # a missing or bad data file: one line, no traceback
        raise SystemExit(f"run_pipeline.py: error: {e}") from None
    except owner.RunDirBusy as e:
        _fail(e)
    except deadlines.StorageError as e:  # the run dir's or a stage's storage stopped answering
        deadlines.fail("run_pipeline.py", deadlines.EXIT_STORAGE, str(e))
    except KeyboardInterrupt:
        msg = "interrupted (Ctrl-C); a re-run skips the finished steps"
        deadlines.fail("run_pipeline.py", deadlines.EXIT_INTERRUPTED, msg)
    results = as_path(cfg.out) / "results.md"
    print(deadlines.call("read", results, results.read_text))
    print(f"run directory: {as_path(cfg.out)}  ({time.time() - t0:.0f}s)")
    if args.cmd == "demo":
        from scicot_jax.pipeline import demo

        print(demo.against_controls(res))
        print(demo.beside_spread(res))
        print(
            "One seed; the columns beside it are the measured seeds of docs/demo.md. "
            "Reproduce them with "
            "`python tools/run_pipeline.py demo --seeds 3,4,5 --jobs 1 --out runs/demo_seeds`."
        )
    return res


if (
    __name__ == "__main__"
):  # `python -m scicot_jax.pipeline.cli`: the installed tools/run_pipeline.py
    main()
