"""Command line of the pipeline (``tools/run_pipeline.py``).

  run_pipeline.py run  --task CARD --out RUN_DIR [--methods baseline,finetune_cot:4,scicot+morsd:4]
                       [--teacher oracle|replay|gemini|openai|import ...] [--student tiny ...]
  run_pipeline.py demo [--out runs/demo]     (synthetic_compass, oracle teacher, tiny T5 on CPU)

A run directory is resumable: running the same command again skips finished steps.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import replace
from typing import Any

from scicot_jax.clihelp import show_defaults
from scicot_jax.paths import as_path
from scicot_jax.pipeline import owner, presets
from scicot_jax.pipeline.budget import MATCH, PAPER_EPOCHS
from scicot_jax.pipeline.config import (
    TEACHER_BACKENDS,
    PipelineConfig,
    StudentConfig,
)
from scicot_jax.runtime import deadlines, quiet_failure
from scicot_jax.runtime.gin_utils import setup_logging

_D = StudentConfig()  # the defaults --help shows


def _kv(text: str) -> tuple[str, str]:
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    return key.strip(), value.strip()


def _value(text: str):
    """'3' -> 3, '0.5' -> 0.5, 'true' -> True, else the string."""
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def _add_run_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("task and data")
    g.add_argument("--task", help="task card name (see tasks/) or path to your own .toml card")
    g.add_argument("--out", help="run directory")
    g.add_argument("--config", help="JSON config (a run's config.json); flags override it")
    g.add_argument(
        "--preset",
        choices=sorted(presets.PRESETS),
        help="a paper's recipe for real cards (its methods and per-stage budgets; flags beside "
        "it override): " + presets.help_text(),
    )
    g.add_argument(
        "--methods",
        help="comma list: baseline, finetune_cot:D, scicot:D, "
        "with optional +morsd, e.g. finetune_cot+morsd:4",
    )
    g.add_argument("--data-dir", help="data folder for the card's source (TFDS, files)")
    g.add_argument(
        "--limit",
        type=_kv,
        action="append",
        default=[],
        metavar="SPLIT=N",
        help="read at most N examples of SPLIT (repeatable)",
    )
    g.add_argument("--train-fraction", type=float)
    g.add_argument(
        "--validation-fraction",
        type=float,
        help="share of train carved off as validation when the card has no validation split "
        "(default 0.1; 0: the card's own validation split, or none)",
    )
    g.add_argument(
        "--source",
        type=_kv,
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a field of the card's [source], e.g. difficulty=4",
    )
    g.add_argument("--seed", type=int)
    t = p.add_argument_group("teacher")
    t.add_argument("--teacher", choices=TEACHER_BACKENDS)
    t.add_argument("--teacher-model")
    t.add_argument("--base-url")
    t.add_argument(
        "--teacher-api",
        choices=("openai", "gemini"),
        help="wire protocol used to talk to the oracle",
    )
    t.add_argument("--temperature", type=float)
    t.add_argument("--cache", help="teacher request cache (SQLite); share it between runs")
    t.add_argument("--importer", help="with --teacher import: importer name")
    t.add_argument("--import-path", help="with --teacher import: recorded rationales")
    t.add_argument("--replay-path", help="with --teacher replay: recorded completions")
    t.add_argument("--oracle-error-rate", type=float)
    t.add_argument("--max-requests", type=int)
    s = p.add_argument_group("student")
    s.add_argument("--student", help="T5 preset: tiny, small, base, large, xl")
    s.add_argument(
        "--model",
        type=_kv,
        action="append",
        default=[],
        metavar="FIELD=VALUE",
        help="T5Config override, e.g. d_model=96 (repeatable)",
    )
    s.add_argument("--vocab", help="SentencePiece model (path, gs://, 't5'); default: demo")
    s.add_argument("--vocab-size", type=int, help="size of the task vocabulary (--vocab task)")
    s.add_argument(
        "--split-digits", action="store_true", help="task vocabulary spells numbers digit by digit"
    )
    s.add_argument("--init-checkpoint", help="initial checkpoint (orbax, trainer or HF dir)")
    s.add_argument(
        "--steps",
        type=int,
        help=f"training budget in steps (see --match; default {_D.steps}, batch {_D.batch_size})",
    )
    s.add_argument(
        "--epochs",
        type=float,
        help="training budget in epochs over the train questions, instead of --steps "
        "(Fine-tune-CoT cards default to the paper's 20)",
    )
    s.add_argument(
        "--match",
        choices=MATCH,
        help="compute-matched methods (default tokens): every method, MoRSD's probes "
        "included, trains on as many tokens (or steps) as --steps of plain fine-tuning; "
        "rationale_student: every rationale-writing student (Fine-tune-CoT's, Sci-CoT's "
        "Stage 1) and the baseline train --steps (or --epochs) each, Stage 2 and MoRSD's "
        "probes are overhead reported beside it (--stage2-steps, --scorer-steps); "
        "none: each stage trains --steps / --stage2-steps / --scorer-steps",
    )
    s.add_argument("--stage2-steps", type=int, help="Sci-CoT Stage 2's own steps (default --steps)")
    s.add_argument(
        "--scorer-steps", type=int, help="each MoRSD probe's own steps (default --steps / 2)"
    )
    s.add_argument("--batch-size", type=int, help=f"default {_D.batch_size}")
    s.add_argument("--optimizer", choices=("adamw", "adafactor"), help=f"default {_D.optimizer}")
    s.add_argument("--lr", type=float, help=f"peak learning rate (default {_D.learning_rate:g})")
    s.add_argument("--weight-decay", type=float)
    s.add_argument(
        "--schedule",
        choices=("constant", "rsqrt", "linear", "cosine"),
        help=f"after {100 * _D.warmup_fraction:g}%% linear warmup (default {_D.schedule}: a cosine "
        "decay to zero left the demo's students at chance on some seeds)",
    )
    s.add_argument("--inputs-length", type=int)
    s.add_argument("--targets-length", type=int)
    s.add_argument("--dropout", type=float, help="dropout rate while training (default 0)")
    s.add_argument(
        "--clip-grad-norm", type=float, help="global gradient-norm clip (default 1; 0: off)"
    )
    s.add_argument(
        "--pack",
        action="store_true",
        help="pack examples into rows of lengths fitted to each stage's data (best-fit)",
    )
    s.add_argument(
        "--packed-row-tokens", type=int, help="packed rows' inputs + targets (default 1024)"
    )
    s.add_argument(
        "--dtype",
        choices=("auto", "float32", "bfloat16"),
        help="activations (default auto: float32 on CPU, else bfloat16)",
    )
    s.add_argument(
        "--gin",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="gin binding applied after the plan's (with --trainer gin), "
        "e.g. train.num_microbatches=2",
    )
    s.add_argument(
        "--trainer",
        choices=("inprocess", "gin"),
        help="inprocess: numpy batches (small runs); gin: train/infer binaries on the SeqIO tasks",
    )
    m = p.add_argument_group("MoRSD selection (methods with +morsd)")
    m.add_argument("--per-question", type=int, help="keep the k lowest-RD rationales per question")
    m.add_argument("--keep-fraction", type=float, help="keep this fraction of correct rationales")
    m.add_argument("--similarity", choices=("jaccard", "char_cosine"))
    m.add_argument("--threshold", type=float, help="near-duplicate similarity threshold")
    m.add_argument("--no-difficulty", action="store_true", help="skip RD scoring")
    p.add_argument(
        "--redo",
        action="append",
        default=[],
        metavar="STEP",
        help="re-run this step even if finished (repeatable)",
    )
    p.add_argument("-v", "--verbose", action="store_true")


def _given(**flags: Any) -> dict[str, Any]:
    """The flags the user gave (None means not given)."""
    return {k: v for k, v in flags.items() if v is not None}


def config_from_args(
    args: argparse.Namespace, base: PipelineConfig | None = None
) -> PipelineConfig:
    """Flags on top of ``base`` (or defaults)."""
    if base is None:
        if args.config:
            base = PipelineConfig.from_dict(json.loads(as_path(args.config).read_text()))
        else:
            if not args.task or not args.out:
                raise SystemExit("run: --task and --out are required (or --config)")
            base = PipelineConfig(task=args.task, out=args.out)
    if args.preset:
        base = presets.apply(base, args.preset)
    top = _given(
        task=args.task,
        out=args.out,
        data_dir=args.data_dir,
        train_fraction=args.train_fraction,
        validation_fraction=args.validation_fraction,
        match=args.match,
        seed=args.seed,
        methods=tuple(m for m in args.methods.split(",") if m) if args.methods else None,
    )
    if args.limit:
        top["limits"] = {**base.limits, **{k: int(v) for k, v in args.limit}}
    if args.source:
        top["source_overrides"] = {
            **base.source_overrides,
            **{k: _value(v) for k, v in args.source},
        }
    teacher = _given(
        backend=args.teacher,
        model=args.teacher_model,
        base_url=args.base_url,
        api=args.teacher_api,
        temperature=args.temperature,
        cache=args.cache,
        importer=args.importer,
        import_path=args.import_path,
        replay_path=args.replay_path,
        oracle_error_rate=args.oracle_error_rate,
        max_requests=args.max_requests,
    )
    if args.teacher in ("replay", "import") and not args.teacher_model:
        teacher["model"] = args.teacher  # not the oracle's name on a replayed or imported run
    student = _given(
        size=args.student,
        vocab=args.vocab,
        init_checkpoint=args.init_checkpoint,
        vocab_size=args.vocab_size,
        split_digits=args.split_digits or None,
        steps=args.steps,
        epochs=args.epochs,
        stage2_steps=args.stage2_steps,
        scorer_steps=args.scorer_steps,
        batch_size=args.batch_size,
        optimizer=args.optimizer,
        learning_rate=args.lr,
        schedule=args.schedule,
        weight_decay=args.weight_decay,
        inputs_length=args.inputs_length,
        targets_length=args.targets_length,
        trainer=args.trainer,
        dropout_rate=args.dropout,
        pack=args.pack or None,
        packed_row_tokens=args.packed_row_tokens,
        dtype=args.dtype,
    )
    if args.steps is not None and args.epochs is None:
        student["epochs"] = None  # --steps replaces a configured epoch budget
    elif args.steps is None and args.epochs is None and base.student.epochs is None:
        if not base.preset:  # a preset's budget stands
            student["epochs"] = paper_epochs(top.get("task", base.task))
    if args.clip_grad_norm is not None:
        student["clip_grad_norm"] = args.clip_grad_norm or None  # 0: no clipping
    if args.model:
        student["overrides"] = {**base.student.overrides, **{k: _value(v) for k, v in args.model}}
    if args.gin:
        student["gin"] = (*base.student.gin, *args.gin)
    sel = _given(
        per_question=args.per_question,
        fraction=args.keep_fraction,
        measure=args.similarity,
        threshold=args.threshold,
    )
    if args.no_difficulty:
        sel["use_difficulty"] = False
    if "per_question" in sel:
        sel.setdefault("fraction", None)
    if "fraction" in sel and sel["fraction"] is not None:
        sel.setdefault("per_question", None)
    cfg = replace(
        base,
        **top,
        teacher=replace(base.teacher, **teacher),
        student=replace(base.student, **student),
        selection=replace(base.selection, **sel),
    )
    try:
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
    _add_run_args(sub.add_parser("run", help="run the pipeline on any task card"))
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


def main(argv: Sequence[str] | None = None) -> dict:
    """Parse, run, print the results table and the run directory; returns the results."""
    args = _parser().parse_args(list(sys.argv[1:] if argv is None else argv))
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
    quiet_failure.install_log_filter()  # library errors in background threads: one line each
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
            "`python tools/run_pipeline.py demo --seeds 3,4,5 --out runs/demo_seeds`."
        )
    return res


if (
    __name__ == "__main__"
):  # `python -m scicot_jax.pipeline.cli`: the installed tools/run_pipeline.py
    main()
