"""`scicot-review` / tools/review.py: review a run's rationales in a browser, read its report.

  scicot-review serve RUN_DIR [--port 8765]       a local web app; open the URL it prints
  scicot-review report RUN_DIR --out report.html  the run report as one self-contained file

RUN_DIR is a pipeline run (results.json, teacher_*/store, select_*, eval_*), a teacher run
(`scicot-teacher run --out`), or a folder holding either. Exit codes: 0 done, 2 bad input.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys
from collections.abc import Sequence
from pathlib import Path

from scicot_jax.clihelp import OneLineErrorParser, show_defaults


def build_parser() -> argparse.ArgumentParser:
    ap = OneLineErrorParser(
        prog="scicot-review",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = ap.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("serve", help="the review web app on 127.0.0.1")
    s.add_argument("run_dir")
    s.add_argument("--host", default="127.0.0.1", help="address to bind")
    s.add_argument("--port", type=int, default=8765, help="0: any free port")
    s.add_argument("--token", help="access token (default: a random one, printed in the URL)")
    r = sub.add_parser("report", help="write the run report as one HTML file")
    r.add_argument("run_dir")
    r.add_argument("--out", required=True, help="HTML file to write")
    return show_defaults(ap)


async def _serve(args: argparse.Namespace) -> int:
    from aiohttp import web

    from scicot_jax.review.app import ReviewApp

    app = ReviewApp(args.run_dir, args.token, args.host)
    runner = web.AppRunner(app.build(), access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, args.host, args.port)
    await site.start()
    app.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    done = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):  # before the URL: a stop after it is clean
        loop.add_signal_handler(sig, done.set)
    host = f"[{args.host}]" if ":" in args.host else args.host
    print(f"scicot-review: serving {app.run.root}", flush=True)
    print(f"http://{host}:{app.port}/?token={app.token}", flush=True)
    await done.wait()
    await runner.cleanup()
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from scicot_jax.teacher.review import ReviewError

    try:
        if args.cmd == "serve":
            return asyncio.run(_serve(args))
        from scicot_jax.files import atomic_write
        from scicot_jax.review import report
        from scicot_jax.review.rundir import RunDir

        html = report.static(RunDir(Path(args.run_dir)))
        atomic_write(args.out, html)
        print(args.out)
    except (ReviewError, OSError, ValueError) as e:
        print(f"scicot-review: error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
