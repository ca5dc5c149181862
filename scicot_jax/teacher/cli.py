"""`scicot-teacher` / tools/query_teacher.py: run, report, cancel, export, apply-review, serve-*.

API keys are read from the environment only (GEMINI_API_KEY / GOOGLE_API_KEY, OPENAI_API_KEY).
Exit codes: 0 done, 1 some jobs failed (re-run retries them) or too many failed in a row,
2 bad input or arguments, 3 stopped by --max-cost / --max-requests, 4 daily quota spent,
5 credentials refused (401/403), 130 interrupted or a batch job cancelled (a re-run resumes).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import sys
import threading
from collections.abc import Sequence
from pathlib import Path

from scicot_jax import disk_full
from scicot_jax.clihelp import OneLineErrorParser, show_defaults
from scicot_jax.data.cards import CardError, load_card
from scicot_jax.data.sources import SourceError
from scicot_jax.data.store import StoreError
from scicot_jax.teacher import prompts
from scicot_jax.teacher.batch import cancel_run
from scicot_jax.teacher.cache import CacheError
from scicot_jax.teacher.config import EXIT_CODES, RunConfig, check_number
from scicot_jax.teacher.fakes.batch_server import BatchFaults
from scicot_jax.teacher.fakes.oracle_server import start_oracle_server
from scicot_jax.teacher.fakes.replay_server import start_replay_server
from scicot_jax.teacher.inputs import InputError, card_source, jsonl_source, validate_jsonl
from scicot_jax.teacher.manifest import RunMismatch
from scicot_jax.teacher.protocol import TeacherError
from scicot_jax.teacher.report import failure_lines, report
from scicot_jax.teacher.review import ReviewError, apply_review, export
from scicot_jax.teacher.runner import RunBusy, TeacherRun


def _add_run(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("run", help="query a teacher and write a rationale-store run")
    src = p.add_argument_group("examples")
    src.add_argument("--task", required=True, help="task card name or path (answer type, source)")
    src.add_argument("--input", help='JSONL of {"id", "question", "answer", "choices"?}')
    src.add_argument("--split", default="train", help="card split (and the records' split)")
    src.add_argument("--data-dir", help="override the card's data directory")
    src.add_argument("--limit", type=int, help="only the first N examples")
    t = p.add_argument_group("teacher")
    t.add_argument("--backend", required=True, choices=("gemini", "openai"))
    t.add_argument(
        "--api", default="chat", choices=("chat", "completions"), help="OpenAI-compatible route"
    )
    t.add_argument("--base-url", help="endpoint override (vLLM, a loopback oracle, a proxy)")
    t.add_argument("--model", required=True)
    t.add_argument(
        "--max-tokens-field",
        default="max_tokens",
        choices=("max_tokens", "max_completion_tokens"),
        help="OpenAI: o-series models want max_completion_tokens",
    )
    t.add_argument("--prompt", required=True, choices=prompts.PROMPT_KINDS)
    t.add_argument("--exemplars", help="few_shot: JSONL of {question, rationale, answer}")
    t.add_argument("--samples", type=int, default=1, help="D: samples per question")
    t.add_argument("--temperature", type=float, default=0.0)
    t.add_argument("--max-tokens", type=int, default=256)
    t.add_argument("--answer-max-tokens", type=int, default=32, help="zero-shot step 2")
    t.add_argument("--answer-temperature", type=float, default=0.0, help="zero-shot step 2")
    t.add_argument(
        "--answer-trigger",
        default=prompts.DEFAULT_TRIGGER.replace("\n", "\\n"),
        help=r"zero-shot step-2 suffix (\n allowed)",
    )
    t.add_argument("--seed", type=int, default=0, help="base of the per-sample seeds")
    o = p.add_argument_group("storage")
    o.add_argument("--cache", required=True, help="SQLite request cache (shared across runs)")
    o.add_argument("--out", required=True, help="run directory (resumed if it exists)")
    lim = p.add_argument_group("limits")
    lim.add_argument("--rpm", type=float, default=0.0, help="requests per minute (0: none)")
    lim.add_argument("--tpm", type=float, default=0.0, help="tokens per minute (0: none)")
    lim.add_argument("--concurrency", type=int, default=32, help="max requests in flight")
    lim.add_argument("--timeout", type=float, default=60.0, help="per request, seconds")
    lim.add_argument(
        "--workers",
        type=int,
        help="processes answering jobs from the cache (default: one per core on runs of 20k+ jobs)",
    )
    lim.add_argument("--max-retries", type=int, default=6, help="per request, 5xx/timeouts")
    lim.add_argument("--max-cost", type=float, help="stop before spending more (USD, estimated)")
    lim.add_argument("--max-requests", type=int, help="stop after sending this many requests")
    lim.add_argument("--price-in", type=float, help="USD per 1M input tokens (override)")
    lim.add_argument("--price-out", type=float, help="USD per 1M output tokens (override)")
    b = p.add_argument_group("batch mode")
    b.add_argument(
        "--mode",
        default="online",
        choices=("online", "batch"),
        help="batch: the provider's batch API (half price, results within hours)",
    )
    b.add_argument(
        "--fallback",
        default="none",
        choices=("none", "online"),
        help="batch: send online what failed in --batch-attempts jobs",
    )
    b.add_argument("--batch-poll", type=float, default=30.0, help="seconds between job polls")
    b.add_argument("--batch-max-requests", type=int, help="per job (default: provider limit)")
    b.add_argument("--batch-attempts", type=int, default=3, help="jobs a request may fail in")
    p.add_argument("--dry-run", action="store_true", help="print the quote; send nothing")
    p.add_argument("--no-progress", action="store_true")


def _add_servers(sub: argparse._SubParsersAction) -> None:
    o = sub.add_parser("serve-oracle", help="offline oracle teacher for the synthetic tasks")
    o.add_argument("--port", type=int, default=0)
    o.add_argument(
        "--latency-ms",
        type=float,
        nargs="+",
        default=[0.0],
        metavar="MS",
        help="latency, or a min and max",
    )
    o.add_argument("--error-rate", type=float, default=0.0, help="share of wrong rationales")
    o.add_argument("--seed", type=int, default=0)
    for name in ("rate-429", "rate-5xx", "rate-malformed", "rate-drop", "rate-slow"):
        o.add_argument(f"--{name}", type=float, default=0.0)
    o.add_argument("--slow-s", type=float, default=5.0)
    o.add_argument("--retry-after", type=float, default=1.0, help="seconds, in 429 responses")
    o.add_argument("--daily-quota-after", type=int, help="daily-quota 429s after N answers")
    o.add_argument("--server-rpm", type=float, help="enforce a requests/min limit with 429s")
    r = sub.add_parser("serve-replay", help="serve recorded Fine-tune-CoT completions")
    for srv in (o, r):
        g = srv.add_argument_group("batch jobs (both protocols)")
        g.add_argument("--batch-queue-s", type=float, default=0.0, help="pending before running")
        g.add_argument("--batch-item-s", type=float, default=0.0, help="seconds per item")
        g.add_argument("--batch-item-error-rate", type=float, default=0.0)
        g.add_argument("--batch-expire-after", type=int, help="items done before a job expires")
    r.add_argument(
        "--data",
        nargs="+",
        required=True,
        help="D_<task>.json files or folders (e.g. ../shared/data/finetune_cot)",
    )
    r.add_argument("--port", type=int, default=0)
    r.add_argument("--latency-ms", type=float, default=0.0)


def build_parser() -> argparse.ArgumentParser:
    ap = OneLineErrorParser(
        prog="scicot-teacher",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = ap.add_subparsers(dest="cmd", required=True)
    _add_run(sub)
    sub.add_parser("report", help="JSON summary of a run").add_argument("run_dir")
    sub.add_parser("cancel", help="cancel a run's batch jobs in flight").add_argument("run_dir")
    f = sub.add_parser("failures", help="list the failed requests a cache recorded, and why")
    f.add_argument("cache", help="the --cache file, or a run directory (its manifest names it)")
    f.add_argument("--limit", type=int, default=50, help="the newest N failures (0: all)")
    e = sub.add_parser("export", help="write a review file for manual cleaning")
    e.add_argument("run_dir")
    e.add_argument("--out", help="review file (default RUN_DIR/review.jsonl)")
    a = sub.add_parser("apply-review", help="apply keep/drop/edit decisions into a new run")
    a.add_argument("run_dir")
    a.add_argument("file")
    a.add_argument("--out", help="new run directory (default RUN_DIR-reviewed)")
    a.add_argument(
        "--missing",
        default="error",
        choices=("error", "keep", "drop"),
        help="what to do with records the review file does not mention",
    )
    _add_servers(sub)
    return show_defaults(ap)


def _run(args: argparse.Namespace) -> int:

    check_number("--limit", args.limit, 1)
    card = load_card(args.task)
    if args.input:
        validate_jsonl(args.input, card)  # every bad line reported before anything is sent
        source = jsonl_source(args.input, args.limit, card)
        desc = {"type": "jsonl", "path": str(Path(args.input).resolve()), "limit": args.limit}
    else:
        source = card_source(card, args.split, args.data_dir, args.limit)
        desc = {"type": "card", "split": args.split, "data_dir": args.data_dir, "limit": args.limit}
    cfg = RunConfig(
        backend=args.backend,
        model=args.model,
        prompt=args.prompt,
        samples=args.samples,
        temperature=args.temperature,
        max_tokens=args.max_tokens,
        answer_max_tokens=args.answer_max_tokens,
        answer_temperature=args.answer_temperature,
        answer_trigger=args.answer_trigger.replace("\\n", "\n"),
        exemplars=args.exemplars,
        seed=args.seed,
        api=args.api,
        max_tokens_field=args.max_tokens_field,
        base_url=args.base_url,
        split=args.split,
        timeout=args.timeout,
        requests_per_minute=args.rpm,
        tokens_per_minute=args.tpm,
        concurrency=args.concurrency,
        workers=args.workers,
        max_retries=args.max_retries,
        max_cost=args.max_cost,
        max_requests=args.max_requests,
        price_in=args.price_in,
        price_out=args.price_out,
        progress=not args.no_progress,
        mode=args.mode,
        fallback=args.fallback,
        batch_poll_s=args.batch_poll,
        batch_max_requests=args.batch_max_requests,
        batch_attempts=args.batch_attempts,
    )
    run = TeacherRun(cfg, card, source, args.cache, args.out, input_desc=desc)
    if args.dry_run:
        print(json.dumps(run.quote(), indent=2))
        return 0
    summary = asyncio.run(run.run())
    print(json.dumps(summary, indent=2))
    if summary["status"] != "complete":
        print(f"scicot-teacher: {summary['status']}: {summary['message']}", file=sys.stderr)
    return EXIT_CODES.get(summary["status"], 1)


def _batch_faults(args: argparse.Namespace) -> object:

    return BatchFaults(
        queue_s=args.batch_queue_s,
        item_s=args.batch_item_s,
        item_error_rate=args.batch_item_error_rate,
        expire_after=args.batch_expire_after,
    )


def _serve(server: object) -> int:
    print(json.dumps({"url": server.url}), flush=True)  # type: ignore[attr-defined]
    done = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: done.set())
    done.wait()
    server.close()  # type: ignore[attr-defined]
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        code = _main(args)
        sys.stdout.flush()  # a closed pipe shows here, not at exit
        return code
    except BrokenPipeError:  # `report | head`: the reader has what it wanted
        _stdout_to_devnull()
        return 0
    except Exception as e:
        if not disk_full.is_full_disk(e):
            raise
        msg = disk_full.full_disk_message(e, _full_path(args, e))
        print(f"scicot-teacher: error: {msg}", file=sys.stderr)
        return 2


def _stdout_to_devnull() -> None:
    """Python flushes stdout again at exit: point it at /dev/null so that cannot fail."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())


def _full_path(args: argparse.Namespace, e: BaseException) -> str | None:
    """Which of the run's outputs a full disk stopped: SQLite's words mean the cache."""
    sqlite_full = "database or disk is full" in str(e) or "database or disk is full" in str(
        e.__cause__
    )
    path = getattr(args, "cache", None) if sqlite_full else getattr(args, "out", None)
    return str(path) if path else None


def _main(args: argparse.Namespace) -> int:
    try:
        if args.cmd == "run":
            return _run(args)
        if args.cmd == "report":
            print(json.dumps(report(args.run_dir), indent=2))
        elif args.cmd == "failures":
            print("\n".join(failure_lines(args.cache, args.limit)))
        elif args.cmd == "cancel":
            print(json.dumps(cancel_run(args.run_dir), indent=2))
        elif args.cmd == "export":
            print(export(args.run_dir, args.out))
        elif args.cmd == "apply-review":
            print(json.dumps(apply_review(args.run_dir, args.file, args.out, args.missing)))
        elif args.cmd == "serve-oracle":
            lat = args.latency_ms if len(args.latency_ms) > 1 else args.latency_ms * 2
            return _serve(
                start_oracle_server(
                    args.port,
                    latency_ms=(lat[0], lat[1]),
                    error_rate=args.error_rate,
                    seed=args.seed,
                    log_requests=False,
                    rate_429=args.rate_429,
                    rate_5xx=args.rate_5xx,
                    rate_malformed=args.rate_malformed,
                    rate_drop=args.rate_drop,
                    rate_slow=args.rate_slow,
                    slow_s=args.slow_s,
                    retry_after_s=args.retry_after,
                    daily_quota_after=args.daily_quota_after,
                    server_rpm=args.server_rpm,
                    batch_faults=_batch_faults(args),
                )
            )
        elif args.cmd == "serve-replay":
            return _serve(
                start_replay_server(
                    args.data,
                    args.port,
                    latency_ms=args.latency_ms,
                    log_requests=False,
                    batch_faults=_batch_faults(args),
                )
            )
    except BrokenPipeError:
        raise  # not a failure of the run: main() ends quietly
    except (
        InputError,
        RunMismatch,
        CardError,
        SourceError,
        StoreError,
        ReviewError,
        CacheError,
        RunBusy,
        OSError,
        ValueError,
    ) as e:
        msg = (
            disk_full.full_disk_message(e, _full_path(args, e)) if disk_full.is_full_disk(e) else e
        )
        print(f"scicot-teacher: error: {msg}", file=sys.stderr)
        return 2
    except TeacherError as e:  # cancel: the provider refused or is unreachable
        print(f"scicot-teacher: error: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
