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
from scicot_jax import disk_full, platforms
from scicot_jax.checkpoints.orbax import NoReadableCheckpointError
from scicot_jax.clihelp import show_defaults
from scicot_jax.data.seqio_feed import DatasetConfig
from scicot_jax.files import atomic_write
from scicot_jax.model import T5Config
from scicot_jax.paths import PathLike, as_path
from scicot_jax.resources import resource_dir
from scicot_jax.runtime import deadlines, gin_checks, quiet_failure
from scicot_jax.runtime.failures import RunFailed

log = logging.getLogger(__name__)

GIN_DIR = resource_dir("gin")  # the checkout's gin/, or share/scicot_jax/gin when installed
_REGISTERED: set[str] = set()
_READ_MACROS: set[str] = set()  # macros read by the config at any point of parsing


def register_configurables(*classes: type) -> None:
    """Makes config dataclasses bindable from gin by class name (`T5Config.d_model = 512`):
    the model's and the data's always; a binary adds its own (the train binary its optimizer
    and loss), so this lower room never imports the rooms above it."""
    for cls in (T5Config, DatasetConfig, *classes):
        if cls.__name__ not in _REGISTERED:
            gin.external_configurable(cls, name=cls.__name__)
            _REGISTERED.add(cls.__name__)


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
    parser = argparse.ArgumentParser(description=description, epilog=_gin_epilog())
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
    _add_t5x_flags(parser)
    for name, kw in extra:
        parser.add_argument(name, **kw)
    show_defaults(parser)
    args, rest = parser.parse_known_args(list(argv[1:]))
    bindings = list(args.gin_bindings)
    unknown = []
    for a in rest:
        if a.startswith("--gin.") and "=" in a:
            key, value = a[len("--gin.") :].split("=", 1)
            bindings.append(f"{key} = {_gin_value(value)}")
        else:
            unknown.append(a)
    unknown = _parse_absl_flags(argv[0] if argv else "prog", unknown)
    if unknown:
        parser.error(f"unrecognized arguments: {' '.join(unknown)}")
    if not args.multiprocess_gpu:
        given = [f for f in _PROCESS_FLAGS if getattr(args, f) is not None]
        if given:
            parser.error(f"--{given[0]} needs --multiprocess_gpu (as in t5x)")
    return args, bindings


_PROCESS_FLAGS = ("coordinator_address", "process_count", "process_index")


def _gin_epilog() -> str:
    """What --help says of gin: the binding flag, the macros, where files are looked up."""
    return (
        "gin: --gin.NAME=VALUE binds any macro or parameter (as --gin_bindings='NAME = VALUE'),\n"
        "e.g. --gin.TRAIN_STEPS=100 --gin.MODEL_DIR=\"'/tmp/m'\" --gin.T5Config.dropout_rate=0.1.\n"
        "macros (t5x's): MODEL_DIR, MIXTURE_OR_TASK_NAME, MIXTURE_OR_TASK_MODULE,\n"
        "TASK_FEATURE_LENGTHS, TRAIN_STEPS, BATCH_SIZE, LEARNING_RATE, DROPOUT_RATE,\n"
        "INITIAL_CHECKPOINT_PATH, CHECKPOINT_PERIOD, EVAL_PERIOD, CHECKPOINT_PATH,\n"
        "EVAL_OUTPUT_DIR, INFER_OUTPUT_DIR, RANDOM_SEED, ...; ours: PACKED_ROW_TOKENS,\n"
        "DECODE_METHOD, NUM_DECODES, TEMPERATURE, MODEL_PARALLEL, COMPILATION_CACHE_DIR.\n"
        "Each gin file lists the macros it reads; a macro nothing reads is an error.\n"
        "--gin_file is looked up as given, then in --gin_search_paths, the working directory\n"
        f"and {GIN_DIR} (models/, runs/, scicot/, t5x/)."
    )


def _bool_flag(text: str) -> bool:
    if text.lower() in ("1", "true", "t", "yes", "y"):
        return True
    if text.lower() in ("0", "false", "f", "no", "n"):
        return False
    raise argparse.ArgumentTypeError(f"not a boolean: {text!r}")


def _add_t5x_flags(parser: argparse.ArgumentParser) -> None:
    """t5x's train/eval/infer flags beyond gin's (names, types and meaning as in t5x)."""
    parser.add_argument(
        "--tfds_data_dir",
        help="TFDS data directory for every Task (seqio.set_tfds_data_dir_override)",
    )
    parser.add_argument(
        "--seqio_additional_cache_dirs",
        type=lambda s: [d for d in s.split(",") if d],
        default=[],
        help="comma-separated directories searched for cached Tasks (USE_CACHED_TASKS)",
    )
    parser.add_argument(
        "--multiprocess_gpu",
        nargs="?",
        const=True,
        default=False,
        type=_bool_flag,
        help="initialize jax.distributed with the three flags below (one process per host)",
    )
    parser.add_argument("--nomultiprocess_gpu", dest="multiprocess_gpu", action="store_false")
    parser.add_argument("--coordinator_address", help="host:port of process 0's coordinator")
    parser.add_argument("--process_count", type=int, help="number of processes")
    parser.add_argument("--process_index", type=int, help="index of this process")
    parser.add_argument(
        "--initialization_timeout", type=int, help="seconds jax.distributed waits for peers"
    )


def _parse_absl_flags(prog: str, args: list[str]) -> list[str]:
    """Lets absl parse the flags it defines (--alsologtostderr, --log_dir, -v, ...)."""
    from absl import flags
    from absl import logging as absl_logging  # noqa: F401 - defines the logging flags

    try:
        return flags.FLAGS([prog, *args], known_only=True)[1:]
    except flags.Error as e:
        raise SystemExit(f"{prog}: {e}") from e


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
    _READ_MACROS.clear()
    try:  # one file at a time: a macro read by a binding that a later file overrides counts
        for f in resolved:
            gin_checks.parse_file(f)
            _READ_MACROS.update(_macros_read())
        gin_checks.parse_bindings(list(bindings))  # one at a time: a bad one is named
        _READ_MACROS.update(_macros_read())
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
    """Logs at `level` to stderr, even when an import already gave the root logger a handler."""
    numeric = getattr(logging, level.upper(), logging.INFO)
    logging.basicConfig(level=numeric, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    # basicConfig does nothing once the root has a handler (a library's module-level
    # logging.warning() installs one at WARNING), which would silently drop every INFO line.
    logging.getLogger().setLevel(numeric)
    for noisy in ("absl", "jax._src", "orbax"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def write_operative_config(model_dir: PathLike, name: str) -> None:
    """Saves gin's operative config beside the outputs (host 0), as t5x does."""
    import jax

    if jax.process_index() != 0:
        return
    atomic_write(as_path(model_dir) / f"{name}.gin", gin.config_str())


def run_binary(
    argv: Sequence[str] | None,
    description: str,
    run: Any,
    flag_bindings: dict[str, tuple[str, dict]] | None = None,
    model_param: str | None = None,
) -> Any:
    """A binary's main: parse t5x-style flags and gin, call `run()`, then clear gin's config.

    flag_bindings: {flag: (gin parameter it overrides when given, argparse kwargs)}, e.g.
    infer's `--shard_id` for `infer.shard_id`, as in t5x.
    model_param: the parameter (`infer.model`) that a model gin's `MODEL` goes to when one is
    given, as t5x's eval/infer commands always give one; without it the checkpoint's config is used.
    """
    import sys

    platforms.keep_host_memory()  # before jax's CPU client starts its threads
    flag_bindings = flag_bindings or {}
    args, bindings = parse_args(
        list(sys.argv if argv is None else argv),
        description,
        [(f"--{flag}", kw) for flag, (_, kw) in flag_bindings.items()],
    )
    for flag, (param, _) in flag_bindings.items():
        if getattr(args, flag) is not None:
            bindings.append(f"{param} = {getattr(args, flag)!r}")
    setup_logging(args.log_level)
    apply_t5x_flags(args)
    try:
        parse_gin(args.gin_file, bindings, args.gin_search_paths)
        if model_param:
            _bind_model(model_param)
        check_macros_used()
        gin_checks.check_config(run)  # wrong types, missing or out-of-range values: one line
        return run()
    except Exception as e:
        if disk_full.is_full_disk(e):  # the error often names no file: name the output dir
            e.scicot_where = _output_dir()
        raise
    finally:
        gin.clear_config()


def _output_dir() -> str | None:
    """Where the binary being run writes (MODEL_DIR, EVAL_OUTPUT_DIR, INFER_OUTPUT_DIR)."""
    from gin.config import ConfigurableReference

    for query in ("train.model_dir", "evaluate.output_dir", "infer.output_dir"):
        try:
            v = gin.query_parameter(query)
            while isinstance(v, ConfigurableReference) and v.scoped_selector.endswith("/gin.macro"):
                v = gin.query_parameter(v.scoped_selector.rsplit("/", 1)[0] + "/macro.value")
        except ValueError:
            continue
        if isinstance(v, str | os.PathLike):
            return str(v)
    return None


# Exit codes of the train/eval/infer binaries (README "Exit codes").
EXIT_DONE, EXIT_FAILED, EXIT_BAD_CONFIG, EXIT_PREEMPTED = 0, 1, 2, 75


def console_main(main: Any, prog: str) -> None:
    """Runs a binary's `main(sys.argv)` and exits: an expected failure is one stderr line.

    0 done; 1 training stopped on a non-finite loss; 2 bad flags, gin, task, checkpoint or
    input; 74 storage unreachable past its deadline; 75 preempted by SIGTERM (a checkpoint
    saved, or "no checkpoint saved: storage unreachable"); 130 Ctrl-C. A re-run resumes.
    """
    import sys

    quiet_failure.install()
    say = quiet_failure.error_line  # the real stderr, even once library noise is muted
    try:
        with deadlines.watching(prog):  # every storage call of the run is bounded in time
            result = main(sys.argv)
    except RunFailed as e:
        say(f"{prog}: error: {e}")
        quiet_failure.silence_exit_noise()
        sys.exit(EXIT_FAILED)
    except deadlines.StorageError as e:  # before OSError: an outage, not a bad config
        deadlines.fail(prog, deadlines.EXIT_STORAGE, str(e))  # no exit barrier on a pod
    except KeyboardInterrupt:
        say(f"{prog}: error: interrupted (Ctrl-C); a re-run resumes")
        quiet_failure.silence_exit_noise()
        sys.exit(deadlines.EXIT_INTERRUPTED)
    except (ValueError, OSError, NoReadableCheckpointError) as e:
        msg = str(e).split("\n  In call to configurable")[0]  # gin's context, not the cause
        if disk_full.is_full_disk(e):
            msg = disk_full.full_disk_message(e, getattr(e, "scicot_where", None))
        say(f"{prog}: error: {msg}")
        quiet_failure.silence_exit_noise()
        sys.exit(EXIT_BAD_CONFIG)
    except BaseException:  # unexpected (or SystemExit): its own output must be seen
        quiet_failure.unmute()
        raise
    sys.exit(EXIT_PREEMPTED if getattr(result, "preempted", False) else EXIT_DONE)


def apply_t5x_flags(args: argparse.Namespace) -> None:
    """What t5x's binaries do with their flags before parsing gin."""
    from absl import flags

    if flags.FLAGS["verbosity"].present:  # absl's -v/--verbosity sets the Python log level
        from absl.logging import converter

        logging.getLogger().setLevel(converter.absl_to_standard(flags.FLAGS.verbosity))
    if flags.FLAGS["log_dir"].present and flags.FLAGS.log_dir:
        from absl import logging as absl_logging

        handler = absl_logging.get_absl_handler()
        handler.use_absl_log_file(log_dir=flags.FLAGS.log_dir)
        logging.getLogger().addHandler(handler)
    if args.multiprocess_gpu:
        from scicot_jax.runtime import partitioning

        partitioning.initialize_distributed(
            args.coordinator_address,
            args.process_count,
            args.process_index,
            args.initialization_timeout,
        )
    if args.tfds_data_dir or args.seqio_additional_cache_dirs:
        import seqio

        if args.tfds_data_dir:
            seqio.set_tfds_data_dir_override(args.tfds_data_dir)
        seqio.add_global_cache_dirs(args.seqio_additional_cache_dirs)


def _bind_model(param: str) -> None:
    """`param = %MODEL` when a model gin set MODEL and nothing bound `param` itself."""
    from gin import config as gin_config

    if ("MODEL", "gin.macro") not in gin_config._CONFIG:
        return
    try:
        gin.query_parameter(param)
        return  # bound explicitly: that wins
    except ValueError:
        pass
    gin.parse_config(f"{param} = %MODEL")


def _macros_read() -> set[str]:
    """Macros that some binding of the current gin config reads (`%NAME`)."""
    from gin import config as gin_config

    return {
        ref.scoped_selector.rsplit("/", 1)[0]
        for ref in gin_config.iterate_references(gin_config._CONFIG)
        if ref.scoped_selector.endswith("/gin.macro")
    }


def check_macros_used() -> None:
    """Raises on a macro that no binding reads (a typo: `TRAIN_STEPZ` for `TRAIN_STEPS`)."""
    import difflib

    from gin import config as gin_config

    # gin has no public list of macros: `NAME = value` is stored as ("NAME", "gin.macro").
    defined = {name for name, selector in gin_config._CONFIG if selector == "gin.macro"}
    unread = sorted(defined - _READ_MACROS - _macros_read())
    if unread:
        name = unread[0]
        known = sorted(_READ_MACROS)
        near = difflib.get_close_matches(name, known, n=1, cutoff=0.6)
        hint = f"; did you mean {near[0]!r}?" if near else f"; known macros: {known}"
        raise ValueError(f"gin macro {name!r} is set but nothing reads it{hint}")
