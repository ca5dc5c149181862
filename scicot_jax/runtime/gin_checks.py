"""Checks a parsed gin config against the binary's signatures before anything runs.

Every value a binary will receive (through macros and `@Configurable()` references) is checked
against its parameter's annotation and a few ranges, so a wrong value is one line naming the
binding the user wrote (`BATCH_SIZE: expected int, got 'eight'`), raised before MODEL_DIR or
any other output exists.
"""

from __future__ import annotations

import dataclasses
import os
import re
import types
import typing
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import gin
from gin import config as gin_config


class GinValueError(ValueError):
    """A gin binding whose value the binary cannot use (one line, naming the binding)."""


POSITIVE = {
    "batch_size",
    "period",
    "stats_period",
    "keep",
    "num_microbatches",
    "model_parallel",
    "num_shards",
    "num_decodes",
}
NON_NEGATIVE = {"eval_period", "total_steps", "eval_steps", "shard_id", "warmup_steps"}
FEATURE_LENGTHS = {"task_feature_lengths"}


_RENAMED: dict[str, str] = {}  # "configurable.param" -> the binding that replaced it
_UNKNOWN = re.compile(r"Configurable '([^']+)' doesn't have a parameter named '([^']+)'")


def renamed(configurable: str, **params: str) -> None:
    """Registers parameters of `configurable` that became other bindings: binding one is an
    error naming its replacement."""
    _RENAMED.update({f"{configurable}.{p}": new for p, new in params.items()})


def _moved(e: BaseException) -> str | None:
    """For gin's unknown-parameter error on a renamed parameter: where it went."""
    m = _UNKNOWN.search(str(e))
    new = _RENAMED.get(f"{m[1]}.{m[2]}") if m else None
    return f"{m[1]}.{m[2]} is now {new}" if m and new else None


def parse_bindings(bindings: Sequence[str]) -> None:
    """gin.parse_config one binding at a time, so an unparsable one is named in the error."""
    for b in bindings:
        try:
            gin.parse_config(b)
        except Exception as e:  # noqa: BLE001 - gin raises tokenizer/syntax/value errors alike
            moved = _moved(e)
            what = f": {moved}" if moved else f" cannot be parsed: {_first_line(e)}"
            raise GinValueError(f"gin binding {b!r}{what}") from None


def parse_file(path: str) -> None:
    """gin.parse_config_file with any parse failure as one GinValueError naming the file."""
    try:
        gin.parse_config_file(path)
    except GinValueError:
        raise
    except Exception as e:  # noqa: BLE001
        where = " ".join(str(e).split("\n", 1)[1:]).strip() or path
        msg = f"gin file {path}: {_moved(e) or _first_line(e)} ({' '.join(where.split())})"
        raise GinValueError(msg) from None


def _first_line(e: BaseException) -> str:
    text = str(e).strip().split("\n")[0] or type(e).__name__
    return text if text.startswith(type(e).__name__) else f"{type(e).__name__}: {text}"


def check_config(root: Callable[..., Any]) -> None:
    """Raises GinValueError on the first value `root` (a gin-configurable binary) would misuse."""
    wrapped = getattr(root, "__wrapped__", root)
    roots = [c for _, c in gin_config._REGISTRY.items() if c.wrapped is wrapped]
    seen: set[tuple[str, str]] = set()
    todo = [("", c) for c in roots]
    while todo:
        scope, configurable = todo.pop()
        if (scope, configurable.selector) in seen:
            continue
        seen.add((scope, configurable.selector))
        hints = _hints(configurable.wrapped)
        for param, (value, label) in _bound(scope, configurable).items():
            if isinstance(value, gin_config.ConfigurableReference):
                sub_scope = value.scoped_selector.rpartition("/")[0]
                todo.append(("/".join(filter(None, (scope, sub_scope))), value.configurable))
                continue
            _check_value(label, param, value, hints.get(param, Any))


def _hints(fn: Any) -> dict[str, Any]:
    try:
        return typing.get_type_hints(fn)
    except Exception:  # noqa: BLE001 - an unresolvable annotation is simply not checked
        return {}


def _bound(scope: str, configurable: Any) -> dict[str, tuple[Any, str]]:
    """{param: (value with macros resolved, the name the user wrote)} for a call in `scope`."""
    out: dict[str, tuple[Any, str]] = {}
    parts = scope.split("/") if scope else []
    short = configurable.name
    for i in range(len(parts) + 1):  # unscoped bindings first, inner scopes override
        s = "/".join(parts[:i])
        for param, value in gin_config._CONFIG.get((s, configurable.selector), {}).items():
            label = f"{s + '/' if s else ''}{short}.{param}"
            out[param] = _resolve(value, label)
    return out


def _resolve(value: Any, label: str) -> tuple[Any, str]:
    """Follows `%MACRO` references to the value; the label becomes the outermost macro."""
    named = None
    for _ in range(32):  # macros referencing macros; gin itself rejects cycles later
        if not isinstance(value, gin_config.ConfigurableReference):
            break
        selector = value.scoped_selector
        if selector == "gin.REQUIRED/gin.constant":
            value = gin.REQUIRED
            break
        if not selector.endswith("/gin.macro"):
            break
        name = selector.rsplit("/", 1)[0]
        named = named or name
        entry = gin_config._CONFIG.get((name, "gin.macro"))
        if entry is None or "value" not in entry:
            raise GinValueError(f"{label}: macro {name} is used but never set (--gin.{name}=...)")
        value = entry["value"]
    return value, named or label


def _check_value(label: str, param: str, value: Any, hint: Any) -> None:
    if value is gin.REQUIRED:
        raise GinValueError(f"{label} is required: set it, e.g. --gin.{label}=...")
    if not _fits(value, hint):
        raise GinValueError(f"{label}: expected {_type_name(hint)}, got {value!r}")
    if param in FEATURE_LENGTHS and value is not None:
        if not isinstance(value, Mapping) or not all(
            isinstance(k, str) and _is_int(v) and v > 0 for k, v in value.items()
        ):
            raise GinValueError(
                f"{label}: expected a dict of positive feature lengths, e.g. "
                f"{{'inputs': 512, 'targets': 128}}, got {value!r}"
            )
    if _is_int(value) and param in POSITIVE and value <= 0:
        raise GinValueError(f"{label}: expected an int > 0, got {value!r}")
    if _is_int(value) and param in NON_NEGATIVE and value < 0:
        raise GinValueError(f"{label}: expected an int >= 0, got {value!r}")


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _fits(value: Any, hint: Any) -> bool:
    """Whether `value` suits the annotation (unknown or generic annotations always do)."""
    if hint is Any or isinstance(hint, typing.TypeVar):
        return True
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        return any(_fits(value, h) for h in typing.get_args(hint))
    if hint is type(None):
        return value is None
    if hint is bool:
        return isinstance(value, bool)
    if hint is int:
        return _is_int(value)
    if hint is float:
        return _is_int(value) or isinstance(value, float)
    if hint is str:
        return isinstance(value, str | os.PathLike)
    base = origin or hint
    if base in (dict, Mapping):
        return isinstance(value, Mapping)
    if base in (list, tuple, Sequence):
        return isinstance(value, list | tuple)
    if isinstance(base, type) and dataclasses.is_dataclass(base):
        return isinstance(value, base)
    return True  # callables, protocols and the like: not checked here


def _type_name(hint: Any) -> str:
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        return " or ".join(_type_name(h) for h in typing.get_args(hint))
    if hint is type(None):
        return "None"
    return getattr(hint, "__name__", str(hint))
