"""t5x-style flags (--gin_file, --gin.KEY=VALUE, --gin_search_paths) and gin registration."""

from __future__ import annotations

import argparse
import ast
import dataclasses
import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import gin

log = logging.getLogger(__name__)

GIN_DIR = Path(__file__).resolve().parents[2] / "gin"  # the repo's (or sdist's) gin/ tree
_REGISTERED = False


def register_configurables() -> None:
    """Makes the config dataclasses bindable from gin (`T5Config.d_model = 512`, ...)."""
    global _REGISTERED
    if _REGISTERED:
        return
    from scicot_jax.data.seqio_feed import DatasetConfig
    from scicot_jax.model import T5Config
    from scicot_jax.train.optimizers import OptimizerConfig
    from scicot_jax.train.step import LossConfig

    for cls in (T5Config, DatasetConfig, OptimizerConfig, LossConfig):
        gin.external_configurable(cls, name=cls.__name__)
    _REGISTERED = True


def plain(obj: Any) -> Any:
    """A gin-built dataclass (a gin subclass) as an instance of its original class."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        base = type(obj).__mro__[1] if type(obj).__module__.startswith("gin") else type(obj)
        return base(**{f.name: getattr(obj, f.name) for f in dataclasses.fields(obj)})
    return obj


def _gin_value(text: str) -> str:
    """t5x wants gin literals (`--gin.MODEL_DIR=\\"/tmp/x\\"`); bare strings are quoted for you."""
    t = text.strip()
    if not t or t[0] in "@%([{'\"" or t in ("None", "True", "False"):
        return t
    try:
        ast.literal_eval(t)
        return t
    except (ValueError, SyntaxError):
        return repr(t)


def parse_args(
    argv: Sequence[str], description: str, extra: Sequence[tuple[str, dict]] = ()
) -> tuple[argparse.Namespace, list[str]]:
    """(flags, gin bindings) from argv (argv[0] is the program name, as in absl)."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument(
        "--gin_file",
        action="append",
        default=[],
        help="gin config file (repeatable), looked up in --gin_search_paths",
    )
    parser.add_argument(
        "--gin_search_paths",
        action="append",
        default=[],
        help="comma-separated directories for gin files and includes",
    )
    parser.add_argument(
        "--gin_bindings",
        action="append",
        default=[],
        help="a gin binding, e.g. 'TRAIN_STEPS = 100' (repeatable)",
    )
    parser.add_argument("--log_level", default="INFO")
    for name, kw in extra:
        parser.add_argument(name, **kw)
    args, rest = parser.parse_known_args(list(argv[1:]))
    bindings = list(args.gin_bindings)
    unknown = []
    for a in rest:
        if a.startswith("--gin.") and "=" in a:
            key, value = a[len("--gin.") :].split("=", 1)
            bindings.append(f"{key} = {_gin_value(value)}")
        else:
            unknown.append(a)
    if unknown:
        parser.error(f"unrecognized arguments: {' '.join(unknown)}")
    return args, bindings


def parse_gin(
    files: Sequence[str], bindings: Sequence[str], search_paths: Sequence[str] = ()
) -> None:
    """Parses gin files then bindings, with search paths (cwd and the repo's gin/ last)."""
    register_configurables()
    paths = [p for s in search_paths for p in s.split(",") if p]
    # The repo's gin/ first: gin logs an error for every search path that lacks an include.
    for p in [str(GIN_DIR), *paths, os.getcwd()]:
        gin.add_config_file_search_path(p)
    resolved = [_find(f, paths) for f in files]
    quiet = _DropMissingPathNoise()
    logging.getLogger().addFilter(quiet)  # gin logs every search path that lacks an include
    try:
        gin.parse_config_files_and_bindings(resolved, list(bindings), finalize_config=False)
    finally:
        logging.getLogger().removeFilter(quiet)


class _DropMissingPathNoise(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith("Path not found")


def _find(name: str, paths: Sequence[str]) -> str:
    for base in ["", *paths, os.getcwd(), str(GIN_DIR)]:
        cand = Path(base) / name if base else Path(name)
        if cand.is_file():
            return str(cand)
    raise FileNotFoundError(f"gin file {name!r} not found in {[*paths, os.getcwd(), GIN_DIR]}")


def setup_logging(level: str = "INFO") -> None:
    logging.basicConfig(
        level=getattr(logging, level.upper(), logging.INFO),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    for noisy in ("absl", "jax._src", "orbax"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def write_operative_config(model_dir: str | Path, name: str) -> None:
    """Saves gin's operative config beside the outputs (host 0), as t5x does."""
    import jax

    if jax.process_index() != 0:
        return
    d = Path(model_dir)
    d.mkdir(parents=True, exist_ok=True)
    (d / f"{name}.gin").write_text(gin.config_str())


def run_binary(argv: Sequence[str] | None, description: str, run: Any) -> Any:
    """A binary's main: parse t5x-style flags and gin, call `run()`, then clear gin's config."""
    import sys

    args, bindings = parse_args(list(sys.argv if argv is None else argv), description)
    setup_logging(args.log_level)
    parse_gin(args.gin_file, bindings, args.gin_search_paths)
    try:
        return run()
    finally:
        gin.clear_config()


# Exit codes of the train/eval/infer binaries (README "Exit codes").
EXIT_DONE, EXIT_FAILED, EXIT_BAD_CONFIG, EXIT_PREEMPTED = 0, 1, 2, 75


def console_main(main: Any, prog: str) -> None:
    """Runs a binary's `main(sys.argv)` and exits: an expected failure is one stderr line.

    0 done; 1 training stopped on a non-finite loss; 2 bad flags, gin, task, checkpoint or
    input; 75 preempted by SIGTERM after saving a checkpoint (a re-run resumes).
    """
    import sys

    from scicot_jax.runtime.checkpoints import NoReadableCheckpointError
    from scicot_jax.train.trainer import NonFiniteLossError

    try:
        result = main(sys.argv)
    except NonFiniteLossError as e:
        print(f"{prog}: error: {e}", file=sys.stderr)
        sys.exit(EXIT_FAILED)
    except (ValueError, OSError, NoReadableCheckpointError) as e:
        print(f"{prog}: error: {' '.join(str(e).split())}", file=sys.stderr)
        sys.exit(EXIT_BAD_CONFIG)
    sys.exit(EXIT_PREEMPTED if getattr(result, "preempted", False) else EXIT_DONE)
