"""Task cards: one declarative TOML file per dataset (tasks/*.toml)."""

from __future__ import annotations

import os
import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from scicot_jax.data.answers import ANSWER_TYPES, COMPAT_TASKS
from scicot_jax.paths import Path as GPath
from scicot_jax.paths import PathLike, as_path, is_url
from scicot_jax.resources import resource_dir

CARDS_DIR = resource_dir("tasks")
METRICS = ("accuracy",)
# A split spec: a source split name, optionally sliced ("train[:90%]", "train[-200:]").
SPLIT_SPEC_RE = re.compile(r"^([\w.-]+)(?:\[(-?\d+%?)?:(-?\d+%?)?\])?$")
SOURCE_TYPES = ("synthetic", "jsonl", "json", "csv", "arc", "tfds", "finetune_cot", "dsbs")
_TOP_LEVEL = {
    "name", "description", "source", "fields", "answer_type", "metric", "splits",
    "feature_lengths", "compat",
}  # fmt: skip
# Source keys each type needs (all types may also set data_dir).
_SOURCE_REQUIRED = {
    "synthetic": ("task",),
    "jsonl": ("files",),
    "json": ("files",),
    "csv": ("files",),
    "arc": ("files",),
    "tfds": ("name",),
    "finetune_cot": ("file",),
    "dsbs": ("dataset", "files"),
}


# Further source keys each type may set (besides type, data_dir and its required ones).
_SOURCE_OPTIONAL = {
    "synthetic": ("sizes", "seed", "difficulty"),
    "finetune_cot": ("split_file",),
}
_FEATURE_LENGTHS = ("inputs", "targets")


class CardError(ValueError):
    """A task card is missing a field or has a wrong one."""


@dataclass(frozen=True)
class TaskCard:
    """A dataset's declaration: where examples come from and how answers look."""

    name: str
    source: dict
    fields: dict
    answer_type: str
    metric: str
    splits: dict  # our split name -> the source's split spec, e.g. "train" or "train[:90%]"
    feature_lengths: dict  # {"inputs": int, "targets": int}
    compat: str | None = None  # Fine-tune-CoT task key for its evaluator, or None
    path: str = ""
    description: str = ""
    extra: dict = field(default_factory=dict)

    @property
    def split_names(self) -> list[str]:
        """Our split names, in card order."""
        return list(self.splits)

    def resolve(self, path: PathLike, data_dir: PathLike | None = None) -> GPath:
        """A source path (local or gs://): absolute, or relative to `data_dir` (else the
        card's data_dir)."""
        if is_url(path) or os.path.isabs(os.path.expanduser(os.fspath(path))):
            return as_path(path)
        base = as_path(data_dir) if data_dir is not None else self.data_dir
        return base / os.fspath(path)

    @property
    def data_dir(self) -> GPath:
        """The card's default data directory (relative ones are relative to the card file)."""
        d = str(self.source.get("data_dir", "."))
        if is_url(d) or os.path.isabs(os.path.expanduser(d)):
            return as_path(d)
        return as_path(os.path.join(os.path.dirname(os.fspath(self.path)), d))


def _fail(path: Path | str, fld: str, msg: str) -> CardError:
    return CardError(f"{path}: field '{fld}': {msg}")


def _require(raw: dict, key: str, typ: type | tuple, path: Path, prefix: str = "") -> Any:
    fld = f"{prefix}{key}"
    if key not in raw:
        raise _fail(path, fld, "missing")
    if not isinstance(raw[key], typ) or isinstance(raw[key], bool) and typ is not bool:
        names = typ.__name__ if isinstance(typ, type) else "/".join(t.__name__ for t in typ)
        raise _fail(path, fld, f"expected {names}, got {type(raw[key]).__name__} {raw[key]!r}")
    return raw[key]


def _no_unknown(table: dict, allowed: set[str], path: Path, prefix: str, why: str = "") -> None:
    """A misspelt key (`difficultyy = 7`) is an error, not silently ignored."""
    unknown = sorted(set(table) - allowed)
    if unknown:
        raise _fail(
            path,
            f"{prefix}{unknown[0]}",
            f"unknown field{' ' + why if why else ''}; allowed: {sorted(allowed)}",
        )


def parse_card(raw: dict, path: str | Path) -> TaskCard:
    """Validate a card's parsed TOML; errors name the card path and the field."""
    path = Path(path)
    unknown = sorted(set(raw) - _TOP_LEVEL)
    if unknown:
        raise _fail(path, unknown[0], f"unknown field; allowed: {sorted(_TOP_LEVEL)}")
    name = _require(raw, "name", str, path)
    source = _require(raw, "source", dict, path)
    stype = _require(source, "type", str, path, "source.")
    if stype not in SOURCE_TYPES:
        raise _fail(path, "source.type", f"{stype!r} is not one of {SOURCE_TYPES}")
    allowed = {"type", "data_dir", *_SOURCE_REQUIRED[stype], *_SOURCE_OPTIONAL.get(stype, ())}
    _no_unknown(source, allowed, path, "source.", f"for source type {stype!r}")
    for key in _SOURCE_REQUIRED[stype]:
        _require(source, key, dict if key == "files" else str, path, "source.")
    if "split_file" in source:
        _require(source, "split_file", str, path, "source.")
    for split, file in source.get("files", {}).items():
        if not isinstance(file, str) or not file:
            raise _fail(path, f"source.files.{split}", f"expected a file path, got {file!r}")
    if "data_dir" in source:
        _require(source, "data_dir", str, path, "source.")
    if stype == "synthetic":
        from scicot_jax.data.synthetic import SYNTHETIC_TASKS

        if source["task"] not in SYNTHETIC_TASKS:
            raise _fail(
                path, "source.task", f"{source['task']!r} is not one of {sorted(SYNTHETIC_TASKS)}"
            )
        if "seed" in source:
            _require(source, "seed", int, path, "source.")
        if "difficulty" in source:
            from scicot_jax.data.synthetic import difficulty_range

            try:
                difficulty_range(source["difficulty"])
            except ValueError as e:
                raise _fail(path, "source.difficulty", str(e)) from None
        sizes = source.get("sizes", {})
        if not isinstance(sizes, dict):
            raise _fail(path, "source.sizes", f"expected a table of split sizes, got {sizes!r}")
        for split, n in sizes.items():
            if not isinstance(n, int) or isinstance(n, bool) or n < 0:
                raise _fail(path, f"source.sizes.{split}", f"expected a count >= 0, got {n!r}")
    if stype == "dsbs" and source["dataset"] not in ("cqa", "svamp"):
        raise _fail(path, "source.dataset", f"{source['dataset']!r} is not 'cqa' or 'svamp'")
    fields = raw.get("fields", {})
    if not isinstance(fields, dict):
        raise _fail(path, "fields", f"expected a table, got {fields!r}")
    if stype in ("jsonl", "json", "csv"):
        for key in ("question", "answer"):
            _require(fields, key, str, path, "fields.")
    for key, val in fields.items():
        if not isinstance(val, str):
            raise _fail(path, f"fields.{key}", f"expected a string, got {val!r}")
    answer_type = _require(raw, "answer_type", str, path)
    if answer_type not in ANSWER_TYPES:
        raise _fail(path, "answer_type", f"{answer_type!r} is not one of {ANSWER_TYPES}")
    metric = raw.get("metric", "accuracy")
    if metric not in METRICS:
        raise _fail(path, "metric", f"{metric!r} is not one of {METRICS}")
    splits = _require(raw, "splits", dict, path)
    if not splits:
        raise _fail(path, "splits", "needs at least one split")
    for split, spec in splits.items():
        if not isinstance(spec, str) or not SPLIT_SPEC_RE.match(spec):
            raise _fail(
                path,
                f"splits.{split}",
                f"expected a source split name like 'train' or 'train[:90%]', got {spec!r}",
            )
    lengths = _require(raw, "feature_lengths", dict, path)
    _no_unknown(lengths, set(_FEATURE_LENGTHS), path, "feature_lengths.")
    for key in ("inputs", "targets"):
        n = _require(lengths, key, int, path, "feature_lengths.")
        if n <= 0:
            raise _fail(path, f"feature_lengths.{key}", f"must be positive, got {n}")
    compat = raw.get("compat")
    if compat is not None and compat not in COMPAT_TASKS:
        raise _fail(path, "compat", f"{compat!r} is not one of {COMPAT_TASKS}")
    return TaskCard(
        name=name,
        source=dict(source),
        fields=dict(fields),
        answer_type=answer_type,
        metric=metric,
        splits=dict(splits),
        feature_lengths={"inputs": lengths["inputs"], "targets": lengths["targets"]},
        compat=compat,
        path=str(path),
        description=str(raw.get("description", "")),
    )


def list_cards() -> list[str]:
    """Names of the shipped cards."""
    return sorted(p.stem for p in CARDS_DIR.glob("*.toml"))


def load_card(name_or_path: str | Path | TaskCard) -> TaskCard:
    """A shipped card by name (e.g. "arc_easy") or a user's card by path."""
    if isinstance(name_or_path, TaskCard):
        return name_or_path
    text = str(name_or_path)
    as_path = Path(text).expanduser()
    if text.endswith(".toml") or "/" in text or as_path.is_file():
        path = as_path
    else:
        path = CARDS_DIR / f"{text}.toml"
        if not path.is_file():
            raise CardError(f"no task card named {text!r} in {CARDS_DIR}; known: {list_cards()}")
    if not path.is_file():
        raise CardError(f"{path}: task card file not found")
    try:
        raw = tomllib.loads(path.read_bytes().decode("utf-8"))
    except UnicodeDecodeError as e:
        raise CardError(f"{path}: not UTF-8 ({e.reason} at byte {e.start})") from None
    except tomllib.TOMLDecodeError as e:
        raise CardError(f"{path}: invalid TOML: {e}") from e
    return parse_card(raw, path)
