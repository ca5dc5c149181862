"""Bounded waits on storage and on shutdown, whatever the storage libraries do: the one home
of storage deadlines for the train, eval and infer binaries and the pipeline (its gs:// mirror).

gcsfs, tensorstore and orbax retry an unreachable gs:// for many minutes, and a Python signal
handler only runs once the main thread's blocking call returns, so an outage used to hang a
run and then its SIGTERM. A binary runs inside `watching(prog)`; each storage call inside
`storage(what, path)` (or `call(...)`, which also retries with backoff while the server
refuses connections). A monitor thread watches those calls and the signals (seen through
signal.set_wakeup_fd, which the C-level handler writes from any thread at once): a call running
past the storage deadline, or a process still alive past the grace after SIGTERM/Ctrl-C, ends
the process with one stderr line and a documented exit code. On a pod the first process to
stop tells the others through jax.distributed's key-value store, so none waits on a barrier.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import socket
import sys
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any, TypeVar
from urllib.parse import urlsplit

EXIT_STORAGE = 74  # storage unreachable past the deadline: a re-run resumes from the last save
EXIT_PREEMPTED = 75  # SIGTERM: a checkpoint saved, or none ("no checkpoint saved: ...")
EXIT_INTERRUPTED = 130  # Ctrl-C

log = logging.getLogger(__name__)
_T = TypeVar("_T")
_PEER_KEY = "scicot/deadlines/exit"  # on a pod: the first process's exit code and line
_GONE_KEY = "scicot/deadlines/gone/"  # ... and which processes have read it
_dying = threading.Lock()  # the monitor, signal and peer threads may all decide at once
# set once jax.distributed has connected: a key-value call before that (incarnation 0) makes
# the coordination agent abort the process
_pod_ready = threading.Event()


def pod_started() -> None:
    """jax.distributed.initialize has returned: the pod's processes may now tell each other."""
    _pod_ready.set()


def storage_deadline_s() -> float:
    """Longest one storage call may take (SCICOT_STORAGE_DEADLINE_S, default 600 s: a large
    checkpoint's save to healthy storage takes minutes, a hung one forever)."""
    return float(os.environ.get("SCICOT_STORAGE_DEADLINE_S", 600))


def shutdown_grace_s() -> float:
    """Longest the process lives after SIGTERM/Ctrl-C (SCICOT_SHUTDOWN_GRACE_S, default 25 s:
    a preemptible VM's notice is ~30 s)."""
    return float(os.environ.get("SCICOT_SHUTDOWN_GRACE_S", 25))


def _pod() -> tuple[Any, int, int] | None:
    """(jax.distributed client, this process, process count) on a pod; None otherwise (jax is
    not imported here: the teacher tool and the pipeline's CLI share this module)."""
    if not _pod_ready.is_set():
        return None
    dist = sys.modules.get("jax._src.distributed")
    state = getattr(dist, "global_state", None)
    client = getattr(state, "client", None)
    if client is None or (getattr(state, "num_processes", 1) or 1) < 2:
        return None
    return client, state.process_id, state.num_processes


def _die(prog: str, code: int, message: str, tell_peers: bool = True) -> None:
    """One line, then exit at once: the main thread may be stuck in storage, holding locks.

    On a pod the others are told first; process 0 hosts jax.distributed's service, so it
    waits (at most 5 s) until they have read it: its exit would abort theirs."""
    if not _dying.acquire(blocking=False):
        threading.Event().wait()  # another thread is ending the process with its own line
    from scicot_jax.runtime.quiet_failure import error_line

    error_line(f"{prog}: error: {message}", flush=False)
    pod = _pod()
    if pod is not None:
        client, me, n = pod
        if tell_peers:
            with contextlib.suppress(Exception):
                client.key_value_set(_PEER_KEY, f"{code} {me} {message}")
        with contextlib.suppress(Exception):
            client.key_value_set(f"{_GONE_KEY}{me}", "1")
        end = time.monotonic() + 5
        while me == 0 and time.monotonic() < end:
            try:
                if len(client.key_value_dir_get(_GONE_KEY)) >= n:
                    break
            except Exception:
                break
            time.sleep(0.1)
    os._exit(code)


def fail(prog: str, code: int, message: str) -> None:
    """Ends the process now with one line and `code`, telling a pod's other processes (an
    ordinary exit would wait on jax.distributed's shutdown barrier for them)."""
    sys.stdout.flush()
    sys.stderr.flush()
    _die(prog, code, message)


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


def unreachable(path: object) -> str | None:
    """The cause when `path` is a URL whose server refuses connections, else None."""
    if "://" not in str(path):
        return None
    why = probe(str(path))
    return why if why.startswith("cannot connect") else None


# connection-level failures that aiohttp (gcsfs) raises (builtin ConnectionError covers the
# rest), and the answers GCS documents as "retry with backoff" (google-cloud-storage's names)
_TRANSIENT = {"ClientConnectorError", "ClientOSError", "ServerDisconnectedError"}
_TRANSIENT |= {"TooManyRequests", "InternalServerError", "BadGateway", "ServiceUnavailable"}
_TRANSIENT |= {"GatewayTimeout"}


def retryable(exc: BaseException, path: object) -> str | None:
    """Why a failed storage call on `path` is worth repeating, in a few words, else None (an
    error of the data itself: a missing file, a full disk, a refused write). Worth repeating:
    the server refuses connections now, a connection broke, or the server lost the session of
    an upload in progress (GCS answers 404 to a resumable upload id after it restarted or the
    session expired; the upload must start again)."""
    why = unreachable(path)
    if why:
        return why
    seen: set[int] = set()
    e: BaseException | None = exc
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        if isinstance(e, FileNotFoundError) and "upload_id=" in str(e):
            return "the server lost an upload in progress (its session is gone)"
        if isinstance(e, ConnectionError | TimeoutError) or type(e).__name__ in _TRANSIENT:
            return f"connection lost or server busy ({type(e).__name__})"
        e = e.__cause__ or e.__context__
    return None


def surely(path: object, answer: bool) -> bool:
    """`answer` of path.exists()/is_dir(), unless it is False because the server is down
    (fsspec answers False rather than fail): then ConnectionError, which `call` retries."""
    why = None if answer else unreachable(path)
    if why:
        raise ConnectionError(f"{path}: {why}")
    return answer


class StorageError(OSError):
    """Storage did not answer (one line, naming the path and the error)."""


def _nothing_to_save(signum: int, frame: Any) -> None:
    """SIGTERM's handler while no code of the run saves on SIGTERM: the signal thread ends the
    process (a Python handler so that the wakeup fd is written; SIG_DFL would die silently)."""


class Guard:
    """The deadlines of one run: `with guard.storage(what, path): ...` around each storage
    call; `start()` from the main thread also bounds the life after SIGTERM/Ctrl-C."""

    def __init__(self, prog: str = "scicot-train", storage_s: float | None = None):
        self.prog = prog
        self.storage_s = storage_deadline_s() if storage_s is None else storage_s
        self.grace_s = shutdown_grace_s()
        self._ops: dict[int, tuple[str, str, float]] = {}
        self._told: set[tuple[str, str, float]] = set()  # slow calls already logged
        self._lock = threading.Lock()
        self._signal: tuple[int, float] | None = None
        self._stop = threading.Event()
        self._pipe: tuple[int, int] | None = None
        self._old_fd: int | None = None
        self._own_sigterm = False
        self._threads: list[threading.Thread] = []

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
            if signal.getsignal(signal.SIGTERM) == signal.SIG_DFL:
                signal.signal(signal.SIGTERM, _nothing_to_save)
                self._own_sigterm = True
            self._threads.append(threading.Thread(target=self._signals, daemon=True))
        self._threads.append(threading.Thread(target=self._monitor, daemon=True))
        self._threads.append(threading.Thread(target=self._peers, daemon=True))
        for t in self._threads:
            t.name = "deadlines"
            t.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._pipe is not None:
            with contextlib.suppress(ValueError):
                signal.set_wakeup_fd(self._old_fd if self._old_fd is not None else -1)
                if self._own_sigterm and signal.getsignal(signal.SIGTERM) is _nothing_to_save:
                    signal.signal(signal.SIGTERM, signal.SIG_DFL)
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
            why = None if isinstance(e, StorageError) else unreachable(path)
            if why:  # an outage, not an error of the data itself
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
                    if signum not in (signal.SIGTERM, signal.SIGINT) or self._signal is not None:
                        continue
                    self._signal = (signum, time.monotonic())
                    if signum == signal.SIGTERM and (
                        signal.getsignal(signal.SIGTERM) is _nothing_to_save
                    ):
                        _die(
                            self.prog,
                            EXIT_PREEMPTED,
                            "stopped by SIGTERM; nothing was being saved, a re-run starts "
                            "this work again",
                        )
        finally:
            os.close(r)
            os.close(w)

    def _monitor(self) -> None:
        while not self._stop.wait(0.25):
            now = time.monotonic()
            with self._lock:
                ops = sorted(self._ops.values(), key=lambda o: o[2])
            slow = [o for o in ops if now - o[2] > min(10.0, self.storage_s / 3)]
            if slow and slow[0] not in self._told:
                self._told.add(slow[0])
                self._tell_slow(*slow[0])
            if ops and now - ops[0][2] > self.storage_s:
                what, path, _ = ops[0]
                _die(
                    self.prog,
                    EXIT_STORAGE,
                    f"storage did not answer for {self.storage_s:.0f}s: {what} {path}: "
                    f"{probe(path)}; a re-run resumes from what was saved",
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

    def _tell_slow(self, what: str, path: str, since: float) -> None:
        """One log line while a call waits on an unreachable server: why the run is quiet."""
        why = unreachable(path)
        if why:
            log.warning(
                "storage not answering (%s): %s %s, waiting up to %.0fs (%s)",
                why,
                what,
                path,
                self.storage_s,
                "SCICOT_STORAGE_DEADLINE_S",
            )

    def _peers(self) -> None:
        """On a pod: ends this process too when another one has stopped on a deadline (its
        collectives and barriers would otherwise wait for the stopped one until they time out).
        A thread of its own: a key-value read may block while the service is going away."""
        while not self._stop.wait(0.5):
            pod = _pod()
            if pod is None:
                continue
            client, me, _ = pod
            try:
                value = client.key_value_try_get(_PEER_KEY)
            except Exception:  # not set (NOT_FOUND), or the service is gone
                continue
            code, who, message = value.split(" ", 2)
            if int(who) != me:
                _die(self.prog, int(code), f"process {who}: {message}", tell_peers=False)


_active: Guard | None = None


@contextlib.contextmanager
def watching(prog: str, signals: bool = True) -> Iterator[Guard]:
    """The process's deadlines while the block runs (a binary's main; nested calls share the
    outer one, so the trainer inside the pipeline reports as the pipeline)."""
    global _active
    if _active is not None:
        yield _active
        return
    guard = Guard(prog).start(signals)
    _active = guard
    try:
        yield guard
    finally:
        _active = None
        guard.stop()


def storage(what: str, path: object) -> contextlib.AbstractContextManager[None]:
    """`with storage("save checkpoint", path): ...`: bounded by the running `watching`; outside
    one (a library caller) only a URL's failure during an outage becomes StorageError."""
    return (_active or Guard()).storage(what, path)


def call(
    what: str,
    path: object,
    fn: Callable[..., _T],
    *args: Any,
    budget_s: float | None = None,
    **kw: Any,
) -> _T:
    """fn(*args, **kw) as one storage call (it must be safe to repeat), retried with backoff
    (0.5 s doubling to 8 s) while its failure is `retryable` (an outage, a broken connection, a
    lost upload), until the storage deadline's budget (or `budget_s`, if less) is spent: then
    StorageError, one line naming the path and the cause. The one retry policy of storage calls
    (checkpoint saves included: checkpoints.orbax.Checkpoints.wait; the pipeline's run
    directory lease renewals: pipeline.owner)."""
    budget = _active.storage_s if _active is not None else storage_deadline_s()
    budget = budget if budget_s is None else min(budget, budget_s)
    end = time.monotonic() + budget
    delay = 0.5
    with storage(what, path):
        while True:
            try:
                return fn(*args, **kw)
            except StorageError:
                raise
            except Exception as e:
                why = retryable(e, path)
                if why is None:
                    raise  # an error of the data itself: repeating it changes nothing
                if time.monotonic() + delay >= end:
                    raise StorageError(
                        f"{what} {path}: storage failed for {budget:.0f}s: {why}"
                    ) from e
                log.info("%s %s failed (%s); trying again in %.1fs", what, path, why, delay)
            time.sleep(delay)
            delay = min(2 * delay, 8.0)
