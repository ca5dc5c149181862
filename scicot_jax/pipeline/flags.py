"""Command-line flags generated from config dataclasses: one flag per field, named after it.

A field ``learning_rate`` of the config at ``student`` is ``--student.learning_rate``; a field of
the top config is ``--NAME``. Its help is the field's comment in the dataclass source (the lines
just above it and the one beside it), its default the dataclass default, its choices a
``Literal`` type's. Values: ``X | None`` takes ``none``; ``bool`` takes nothing (true) or
true/false; ``tuple[str, ...]`` a comma list (commas inside brackets or quotes stay); ``dict``
``KEY=VALUE`` (repeatable, JSON values, merged into the configured dict).
"""

from __future__ import annotations

import argparse
import ast
import dataclasses
import difflib
import inspect
import io
import json
import textwrap
import tokenize
import types
import typing
from collections.abc import Iterable
from typing import Any


def field_comments(cls: type) -> dict[str, str]:
    """Each field's comment in the class source: the comment lines right above it, then the
    comment on its own line(s)."""
    src = textwrap.dedent(inspect.getsource(cls))
    lines = src.splitlines()
    out = {}
    for node in ast.parse(src).body[0].body:
        if not (isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name)):
            continue
        above: list[str] = []
        i = node.lineno - 2
        while i >= 0 and lines[i].strip().startswith("#"):
            above.insert(0, lines[i].strip().lstrip("#").strip())
            i -= 1
        stmt = "\n".join(lines[node.lineno - 1 : node.end_lineno])
        toks = tokenize.generate_tokens(io.StringIO(stmt).readline)
        beside = [t.string.lstrip("#").strip() for t in toks if t.type == tokenize.COMMENT]
        out[node.target.id] = " ".join([*above, *beside])
    return out


def _optional(tp: Any) -> tuple[Any, bool]:
    """(T, True) for ``T | None``, else (tp, False)."""
    args = typing.get_args(tp)
    if typing.get_origin(tp) in (typing.Union, types.UnionType) and type(None) in args:
        rest = [a for a in args if a is not type(None)]
        return rest[0], True
    return tp, False


def split_list(text: str) -> tuple[str, ...]:
    """'a,b' -> ('a', 'b'); commas inside (), [], {} or quotes do not split."""
    items, depth, quote, cur = [], 0, "", ""
    for ch in text:
        if quote:
            quote = "" if ch == quote else quote
        elif ch in "'\"":
            quote = ch
        elif ch in "([{":
            depth += 1
        elif ch in ")]}":
            depth -= 1
        elif ch == "," and depth == 0:
            items.append(cur.strip())
            cur = ""
            continue
        cur += ch
    items.append(cur.strip())
    return tuple(i for i in items if i)


def _json_or_text(text: str) -> Any:
    """'3' -> 3, '0.5' -> 0.5, 'true' -> True, else the string."""
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


class _KV(tuple):
    """One KEY=VALUE of a dict flag (so ``given`` tells a dict flag from a list flag)."""


def _key_value(text: str) -> _KV:
    key, sep, value = text.partition("=")
    if not sep or not key.strip():
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    return _KV((key.strip(), _json_or_text(value.strip())))


def _bool(text: str) -> bool:
    if text.lower() in ("true", "1", "yes"):
        return True
    if text.lower() in ("false", "0", "no"):
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, got {text!r}")


def _scalar(tp: Any, optional: bool):
    """The argparse type of a scalar field (``none`` -> None where the field allows it)."""
    base = {int: int, float: float, str: str}.get(tp, str)

    def parse(text: str) -> Any:
        if optional and text.lower() == "none":
            return None
        try:
            return base(text)
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"expected {base.__name__}{' or none' if optional else ''}, got {text!r}"
            ) from None

    parse.__name__ = base.__name__  # argparse names the type in its errors
    return parse


def _show(value: Any) -> str:
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, tuple | dict) and not value:
        return "empty"
    if isinstance(value, tuple):
        return ",".join(map(str, value))
    if isinstance(value, float):
        return f"{value:g}"
    return "none" if value is None else str(value)


def add_flags(
    parser: argparse._ActionsContainer,
    cls: type,
    prefix: str = "",
    skip: Iterable[str] = (),
    defaults: Any = None,
) -> None:
    """One flag per field of ``cls`` (nested dataclasses: their own ``--FIELD.NAME`` flags,
    each config in its own help group); ``skip`` names fields (dotted) set another way;
    ``defaults``: the instance whose values --help shows (default: the fields' defaults)."""
    skip = set(skip)
    hints = typing.get_type_hints(cls)
    comments = field_comments(cls)
    for f in dataclasses.fields(cls):
        name = prefix + f.name
        if name in skip:
            continue
        tp, optional = _optional(hints[f.name])
        default = _default(f) if defaults is None else getattr(defaults, f.name)
        if dataclasses.is_dataclass(tp):
            group = parser.add_argument_group(f"{name} ({tp.__name__})", comments.get(f.name))
            add_flags(group, tp, name + ".", skip, default)
            continue
        help_ = comments.get(f.name, "")
        if default is not dataclasses.MISSING:
            help_ += f" (default: {_show(default)})"
        help_ = help_.replace("%", "%%")  # argparse formats help with %
        kw: dict[str, Any] = {"dest": name, "default": argparse.SUPPRESS, "help": help_}
        origin = typing.get_origin(tp)
        if tp is bool:
            kw.update(nargs="?", const=True, type=_bool, metavar="true|false")
        elif origin is typing.Literal:
            kw.update(choices=typing.get_args(tp))
        elif origin is tuple or tp is tuple:
            kw.update(type=split_list, action="append", metavar="A,B,...")
        elif origin is dict or tp is dict:
            kw.update(type=_key_value, action="append", metavar="KEY=VALUE")
        else:
            kw.update(type=_scalar(tp, optional), metavar=getattr(tp, "__name__", "VALUE").upper())
        parser.add_argument("--" + name, **kw)


def _default(f: dataclasses.Field) -> Any:
    """A field's default value (MISSING for a required field)."""
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
    return f.default


def given(args: argparse.Namespace, cls: type, prefix: str = "") -> dict[str, Any]:
    """The flags of ``cls``'s fields given under ``prefix`` (e.g. "student."), by field name, in
    the field's type: list flags joined in order, dict flags as one dict of their KEY=VALUEs."""
    names = {f.name for f in dataclasses.fields(cls)}
    out = {}
    for dest, value in vars(args).items():
        if not dest.startswith(prefix) or dest[len(prefix) :] not in names:
            continue
        if isinstance(value, list) and value and isinstance(value[0], _KV):
            value = dict(value)
        elif isinstance(value, list):
            value = tuple(item for part in value for item in part)
        out[dest[len(prefix) :]] = value
    return out


def merged(base: Any, changes: dict[str, Any]) -> Any:
    """``base`` (a dataclass) with ``changes``; dict fields are merged key by key."""
    for k, v in changes.items():
        if isinstance(v, dict) and isinstance(getattr(base, k), dict):
            changes[k] = {**getattr(base, k), **v}
    return dataclasses.replace(base, **changes)


def nearest_flag(parser: argparse.ArgumentParser, flag: str) -> str | None:
    """The known flag nearest to an unknown ``flag`` (``--lr`` -> ``--student.learning_rate``
    is too far; ``--batch-size`` -> ``--student.batch_size`` is found by its last part)."""
    known = [o for a in parser._actions for o in a.option_strings if o.startswith("--")]
    want = flag.split("=")[0].lstrip("-").replace("-", "_")
    by_last = {k.lstrip("-").rsplit(".", 1)[-1]: k for k in known}
    if want in by_last:
        return by_last[want]
    close = difflib.get_close_matches(want, list(by_last), n=1, cutoff=0.75)
    return by_last[close[0]] if close else None
