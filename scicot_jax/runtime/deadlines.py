"""Bounded waits on storage and on shutdown, whatever the storage libraries do.

gcsfs, tensorstore and orbax retry an unreachable gs:// for many minutes, and a Python signal
handler only runs once the main thread's blocking call returns, so an outage used to hang a
run and then its SIGTERM. Here a monitor thread watches every storage call the trainer makes
and the signals (seen through signal.set_wakeup_fd, which the C-level handler writes from any
thread at once): a call running past the storage deadline, or a process still alive past the
grace after SIGTERM/Ctrl-C, ends the process with one stderr line and a documented exit code.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import threading
import time
from collections.abc import Iterator
from urllib.parse import urlsplit

EXIT_STORAGE = 74  # storage unreachable past the deadline: a re-run resumes from the last save
EXIT_PREEMPTED = 75  # SIGTERM: a checkpoint saved, or none ("no checkpoint saved: ...")
EXIT_INTERRUPTED = 130  # Ctrl-C


def storage_deadline_s() -> float:
    """Longest one storage call may take (SCICOT_STORAGE_DEADLINE_S, default 600 s: a large
    checkpoint's save to healthy storage takes minutes, a hung one forever)."""
    return float(os.environ.get("SCICOT_STORAGE_DEADLINE_S", 600))


def shutdown_grace_s() -> float:
    """Longest the process lives after SIGTERM/Ctrl-C (SCICOT_SHUTDOWN_GRACE_S, default 25 s:
    a preemptible VM's notice is ~30 s)."""
    return float(os.environ.get("SCICOT_SHUTDOWN_GRACE_S", 25))


def _die(prog: str, code: int, message: str) -> None:
    """One line, then exit at once: the main thread may be stuck in storage, holding locks."""
    os.write(2, f"{prog}: error: {' '.join(message.split())}\n".encode())
    os._exit(code)


def probe(path: str, timeout: float = 3.0) -> str:
    """Why storage for `path` does not answer, in a few words (a TCP connect to its server)."""
    if "://" not in str(path):
        return "no answer from the file system"
    emulator = os.environ.get("STORAGE_EMULATOR_HOST")
    url = urlsplit(emulator if emulator and "://" in emulator else f"http://{emulator}")
    host, port = (url.hostname, url.port or 80) if emulator else ("storage.googleapis.com", 443)
    try:
        socket.create_connection((host, port), timeout).close()
    except OSError as e:
        return f"cannot connect to {host}:{port} ({e.strerror or e})"
    return f"{host}:{port} accepts connections but does not answer"


class StorageError(OSError):
    """Storage did not answer (one line, naming the path and the error)."""


class Guard:
    """The deadlines of one run: `with guard.storage(what, path): ...` around each storage
    call; `start()` from the main thread also bounds the life after SIGTERM/Ctrl-C."""

    def __init__(self, prog: str = "scicot-train", storage_s: float | None = None):
        self.prog = prog
        self.storage_s = storage_deadline_s() if storage_s is None else storage_s
        self.grace_s = shutdown_grace_s()
        self._ops: dict[int, tuple[str, str, float]] = {}
        self._lock = threading.Lock()
        self._signal: tuple[int, float] | None = None
        self._stop = threading.Event()
        self._pipe: tuple[int, int] | None = None
        self._old_fd: int | None = None
        self._threads: list[threading.Thread] = []
        self.saved_after_signal = False

    def start(self, signals: bool = True) -> Guard:
        if signals and threading.current_thread() is threading.main_thread():
            r, w = os.pipe()
            os.set_blocking(w, False)
            try:
                self._old_fd = signal.set_wakeup_fd(w, warn_on_full_buffer=False)
                self._pipe = (r, w)
            except ValueError:  # not the main interpreter thread after all
                os.close(r)
                os.close(w)
        if self._pipe is not None:
            self._threads.append(threading.Thread(target=self._signals, daemon=True))
        self._threads.append(threading.Thread(target=self._monitor, daemon=True))
        for t in self._threads:
            t.name = "deadlines"
            t.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._pipe is not None:
            with contextlib.suppress(ValueError):
                signal.set_wakeup_fd(self._old_fd if self._old_fd is not None else -1)
            os.write(self._pipe[1], b"\0")  # wakes the signal thread, which closes the pipe
        for t in self._threads:
            t.join(timeout=5)

    @contextlib.contextmanager
    def storage(self, what: str, path: object) -> Iterator[None]:
        """Bounds one storage call; a URL's failure during an outage becomes StorageError."""
        key = id(object())
        with self._lock:
            self._ops[key] = (what, str(path), time.monotonic())
        try:
            yield
        except Exception as e:
            if "://" in str(path) and not isinstance(e, StorageError):
                why = probe(str(path))  # an outage, or an error of the data itself?
                if why.startswith("cannot connect"):
                    raise StorageError(f"{what} {path}: storage unreachable: {why}") from e
            raise
        finally:
            with self._lock:
                self._ops.pop(key, None)

    def _signals(self) -> None:
        r, w = self._pipe
        try:
            while not self._stop.is_set():
                data = os.read(r, 64)
                for signum in data:
                    if signum in (signal.SIGTERM, signal.SIGINT) and self._signal is None:
                        self._signal = (signum, time.monotonic())
        finally:
            os.close(r)
            os.close(w)

    def _monitor(self) -> None:
        while not self._stop.wait(0.25):
            now = time.monotonic()
            with self._lock:
                ops = sorted(self._ops.values(), key=lambda o: o[2])
            if ops and now - ops[0][2] > self.storage_s:
                what, path, _ = ops[0]
                _die(
                    self.prog,
                    EXIT_STORAGE,
                    f"storage did not answer for {self.storage_s:.0f}s: {what} {path}: "
                    f"{probe(path)}; a re-run resumes from the last saved checkpoint",
                )
            if self._signal is not None and now - self._signal[1] > self.grace_s:
                signum = self._signal[0]
                name = "SIGTERM" if signum == signal.SIGTERM else "Ctrl-C"
                where = f"{ops[0][0]} {ops[0][1]}: {probe(ops[0][1])}" if ops else "no answer"
                _die(
                    self.prog,
                    EXIT_PREEMPTED if signum == signal.SIGTERM else EXIT_INTERRUPTED,
                    f"no checkpoint saved: storage unreachable ({name} {self.grace_s:.0f}s ago; "
                    f"{where}); a re-run resumes from the last saved checkpoint",
                )
