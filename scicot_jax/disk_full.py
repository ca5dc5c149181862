"""A full disk, recognised however a library reports it, as one line naming the path."""

from __future__ import annotations

import errno

TEXTS = ("No space left on device", "database or disk is full")


def _chain(e: BaseException | None):
    for _ in range(10):  # an exception, what it was raised from, and so on
        if e is None:
            return
        yield e
        e = e.__cause__ or e.__context__


def is_full_disk(e: BaseException) -> bool:
    """Whether `e` or what it was raised from is ENOSPC (an OSError, SQLite's or TensorStore's
    wording of it)."""
    return any(
        (isinstance(x, OSError) and x.errno == errno.ENOSPC) or any(t in str(x) for t in TEXTS)
        for x in _chain(e)
    )


def full_disk_message(e: BaseException, where: str | None = None) -> str:
    """'no space left on device writing <path> ...': the path from the error, else `where`."""
    named = [x.filename for x in _chain(e) if isinstance(x, OSError) and x.filename]
    path = named[0] if named else where
    if path is None:  # the error's own words name the file
        return f"no space left on device: {' '.join(str(e).split())}"
    return f"no space left on device writing {path} (free space there and re-run: it resumes)"


def naming(e: BaseException, path: object) -> BaseException:
    """`e` as an OSError(ENOSPC) naming `path` when it is a full disk that names no file."""
    if not is_full_disk(e) or any(isinstance(x, OSError) and x.filename for x in _chain(e)):
        return e
    err = OSError(errno.ENOSPC, "No space left on device", str(path))
    err.__cause__ = e
    return err
