"""An expected failure stays one line: library noise around it is cut to its message.

Orbax logs each failed async-save thread's exception with its traceback (through absl), and at
exit TensorBoard writers, orbax's event loops and their threads report the same I/O error again
from atexit callbacks and threads. Once the binary has printed its one error line those add
nothing but tracebacks; this module cuts them.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import sys
import threading
from typing import Any

from scicot_jax import disk_full

_installed = False
_saved_fd: int | None = None  # the real stderr while fd 2 is muted (see mute)


class _OneLineLibraryErrors(logging.Filter):
    """Orbax's background-thread errors and gcsfs's spent retries: the message once, without
    the traceback."""

    def __init__(self) -> None:
        super().__init__()
        self._seen: set[str] = set()

    def filter(self, record: logging.LogRecord) -> bool:
        library = "orbax" in record.pathname or record.name.startswith("gcsfs")
        if not library or record.levelno < logging.ERROR:
            return True
        record.exc_info, record.exc_text, record.stack_info = None, None, None
        msg = record.getMessage().split("raised an exception: ", 1)[-1]
        if msg in self._seen:  # every save thread reports the one cause again
            return False
        self._seen.add(msg)
        if any(t in msg for t in disk_full.TEXTS):  # the run is over: the rest is noise
            mute()
        return True


class _LateCallbacksDropped(asyncio.SelectorEventLoop):
    """An event loop that drops a callback another thread sends after the loop has closed.

    Orbax saves in a thread with a loop of its own; when a write fails (a full disk) that loop
    closes while TensorStore futures are still in flight, and each one that completes later
    prints an "Event loop is closed" traceback from C++ (PyErr_Print, past every Python hook),
    sometimes before orbax has reported the failure. Nothing can run on a closed loop, and the
    failed save is reported by orbax itself, so the late callback is dropped.
    """

    def call_soon_threadsafe(self, callback: Any, *args: Any, context: Any = None) -> Any:
        try:
            return super().call_soon_threadsafe(callback, *args, context=context)
        except RuntimeError:
            if not self.is_closed():
                raise
            return None


class _LoopPolicy(asyncio.DefaultEventLoopPolicy):
    _loop_factory = _LateCallbacksDropped


def install() -> None:
    """For a binary: the filter on the loggers orbax and gcsfs report through, and event loops
    that drop callbacks arriving after they closed."""
    global _installed
    if _installed:
        return
    f = _OneLineLibraryErrors()
    for name in ("absl", "orbax", "gcsfs"):  # gcsfs: "out of retries" with its traceback
        logging.getLogger(name).addFilter(f)
    asyncio.set_event_loop_policy(_LoopPolicy())
    _installed = True


def mute() -> None:
    """From now on fd 2 goes nowhere; the binary's one error line still reaches the real stderr
    through error_line(). For a full disk inside an async save: library threads go on reporting
    the same failure before the main thread learns the save failed."""
    global _saved_fd
    if _saved_fd is not None:
        return
    try:
        sys.stderr.flush()
        _saved_fd = os.dup(2)
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, 2)
        os.close(devnull)
    except (OSError, ValueError):  # no real stderr (an embedding host, a closed stream)
        pass


def unmute() -> None:
    """fd 2 back to the real stderr (an unexpected error's traceback must be seen)."""
    global _saved_fd
    if _saved_fd is not None:
        with contextlib.suppress(OSError, ValueError):
            sys.stderr.flush()
            os.dup2(_saved_fd, 2)
            os.close(_saved_fd)
        _saved_fd = None


def error_line(text: str, flush: bool = True) -> None:
    """Writes the binary's one error line to the real stderr, muted or not (flush=False from a
    thread that must not wait on the main thread's stream lock)."""
    if flush:
        with contextlib.suppress(OSError, ValueError):
            sys.stderr.flush()
    os.write(_saved_fd if _saved_fd is not None else 2, f"{' '.join(text.split())}\n".encode())


def silence_exit_noise() -> None:
    """After the error line: exceptions of atexit callbacks and dying threads are not shown.

    Hooks alone miss some: asyncio logs futures never retrieved when they are collected, and
    orbax's loops print "Event loop is closed" tracebacks straight to stderr. The error line is
    already written, so the process's stderr is closed off for the rest of its exit.
    """
    sys.unraisablehook = lambda unraisable: None
    threading.excepthook = lambda args: None
    logging.getLogger("asyncio").setLevel(logging.CRITICAL + 1)
    try:
        sys.stderr.flush()
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stderr.fileno())
        os.close(devnull)
    except (OSError, ValueError):  # no real stderr (an embedding host, a closed stream)
        pass
