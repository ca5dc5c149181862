"""File helpers shared by the library, the binaries and the teacher tool.

Atomic writes (temp file + fsync + ``os.replace``), JSON and JSONL reading with file:line
errors, JSONL writing, and advisory (flock) locks. Standard library and orjson only: the teacher
tool runs on machines without jax or TensorFlow.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import secrets
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import IO, Any

import orjson

from scicot_jax.urls import is_url


def json_loads(data: str | bytes) -> Any:
    """json.loads, through orjson where orjson accepts the text (4x faster, the same values):
    what it refuses (NaN, integers past 64 bits, UTF-16, bad JSON) goes to json.loads, which
    returns its usual value or raises its usual error."""
    try:
        return orjson.loads(data)
    except orjson.JSONDecodeError:
        return json.loads(data)


def fsync_dir(directory: str | os.PathLike[str]) -> None:
    """Make a rename or a new file in ``directory`` durable (no-op where unsupported)."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


TEMP_SUFFIX = ".tmp"


def is_in_flight(path: str | os.PathLike[str]) -> bool:
    """Whether ``path`` is an ``atomic_open`` temp file: a write in progress, not a result."""
    name = Path(path).name
    return name.startswith(".") and name.endswith(TEMP_SUFFIX)


@contextlib.contextmanager
def atomic_open(path: str | os.PathLike[str], mode: str = "w") -> Iterator[IO[Any]]:
    """A temp file beside ``path`` that replaces it on success (readers see the old or the new
    file, never a mix) and is removed on error. Parent directories are created."""
    if mode not in ("w", "wb"):
        raise ValueError(f"atomic_open: mode={mode!r}; expected 'w' or 'wb'")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # Unique per writer, created like any new file (umask applies, unlike mkstemp's 0600).
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}{TEMP_SUFFIX}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    try:
        with open(fd, mode, encoding=None if "b" in mode else "utf-8") as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)


def atomic_write(path: str | os.PathLike[str], data: str | bytes) -> Any:
    """Write a whole file atomically (see ``atomic_open``; a gs:// object upload is atomic
    itself); returns its path."""
    if is_url(path):
        from scicot_jax.paths import as_path  # etils: 0.7 s to import, only for URLs

        target = as_path(path)
        target.write_bytes(data if isinstance(data, bytes) else data.encode("utf-8"))
        return target
    with atomic_open(path, "wb" if isinstance(data, bytes) else "w") as f:
        f.write(data)
    return Path(path)


def write_jsonl(
    path: str | os.PathLike[str], rows: Iterable[Any], *, sort_keys: bool = False
) -> int:
    """Write one JSON value per line (UTF-8, non-ASCII kept) atomically; returns the count."""
    lines = (json.dumps(row, ensure_ascii=False, sort_keys=sort_keys) + "\n" for row in rows)
    if is_url(path):
        text = list(lines)
        atomic_write(path, "".join(text))
        return len(text)
    n = 0
    with atomic_open(path) as f:
        for line in lines:  # streamed: millions of rows never sit in memory at once
            f.write(line)
            n += 1
    return n


def read_json(path: str | os.PathLike[str], error: type[Exception] = ValueError) -> Any:
    """A whole JSON file; bad JSON or bytes raise ``error`` naming file:line."""
    if is_url(path):
        from scicot_jax.paths import as_path

        data = as_path(path).read_bytes()
    else:
        data = Path(path).read_bytes()
    try:
        return json.loads(data.decode("utf-8"))
    except json.JSONDecodeError as e:
        raise error(f"{path}:{e.lineno}: invalid JSON ({e.msg})") from None
    except UnicodeDecodeError as e:
        line = data[: e.start].count(b"\n") + 1
        raise error(f"{path}:{line}: not UTF-8 ({e.reason} at byte {e.start})") from None


def read_jsonl(
    path: str | os.PathLike[str],
    error: type[Exception] = ValueError,
    *,
    complete_lines: bool = False,
    keep_going: bool = False,
) -> Iterator[tuple[int, Any]]:
    """(line number, value) for each non-blank line. A bad line raises ``error`` naming
    file:line ("invalid JSON (...)" or "not UTF-8 (...)"), or with ``keep_going`` is yielded as
    that error (to report every bad line). With ``complete_lines`` a last line without its newline
    (a concurrent writer's line in flight) ends the file instead."""
    if is_url(path):
        from scicot_jax.paths import as_path

        opened = as_path(path).open("rb")
    else:
        opened = open(path, "rb")  # noqa: SIM115 - closed by the with below
    with opened as f:
        for lineno, raw in enumerate(f, 1):
            if complete_lines and not raw.endswith(b"\n"):
                return
            if raw.isspace():  # a blank line (no copy made to find out)
                continue
            try:
                value = json_loads(raw)
            except json.JSONDecodeError as e:
                bad = error(f"{path}:{lineno}: invalid JSON ({e.msg})")
            except UnicodeDecodeError as e:
                bad = error(f"{path}:{lineno}: not UTF-8 ({e.reason} at byte {e.start})")
            else:
                yield lineno, value
                continue
            if not keep_going:
                raise bad from None
            yield lineno, bad


def try_lock(path: str | os.PathLike[str]) -> int | None:
    """Take an exclusive advisory lock (flock) on ``path``, creating it, without waiting: the
    open descriptor (``os.close`` it to release), or None when another process holds it."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return None
    return fd
