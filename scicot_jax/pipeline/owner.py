"""One owner per pipeline run directory: a second run on the same --out is refused in one line.

Local: an flock on `<out>/.owner` (the kernel releases it when the owner dies, however it dies);
the file says who holds it. gs://: a lease object `<out>/.owner.json` written with generation
preconditions (create only if absent; renew or take over only the generation read), renewed by
a thread; an expired lease, or one whose owner process on this host is gone, passes on.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import socket
import threading
import time
import uuid
from collections.abc import Iterator

from scicot_jax.files import try_lock
from scicot_jax.paths import is_url
from scicot_jax.runtime import deadlines

log = logging.getLogger(__name__)

LOCAL_FILE = ".owner"
LEASE_OBJECT = ".owner.json"
LEASE_TTL_S = 120.0  # a crashed owner's gs:// lease passes on after this long
_GCS_TIMEOUT_S = 30.0  # each request: a lease call never waits on storage for long
_RENEW_MARGIN = 1 / 8  # of the ttl: a renewal must land this long before its lease ends


class RunDirBusy(RuntimeError):
    """Another live run owns the run directory."""


def _me(ttl: float) -> dict:
    now = time.time()
    return {
        "host": socket.gethostname(),
        "pid": os.getpid(),
        "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(now)),
        "owner_id": uuid.uuid4().hex,
        "expires": now + ttl,
    }


def _busy(out: str, info: dict | None) -> RunDirBusy:
    if not info:
        return RunDirBusy(f"{out}: another run owns this run directory")
    left = info.get("expires")
    lease = f"; its lease ends in {max(0, left - time.time()):.0f}s unless renewed" if left else ""
    return RunDirBusy(
        f"{out}: another run owns this run directory (host {info.get('host')}, pid "
        f"{info.get('pid')}, started {info.get('started')}{lease}); wait for it or stop it"
    )


def _dead_here(info: dict) -> bool:
    """The owner ran on this host and its process is gone."""
    if info.get("host") != socket.gethostname():
        return False
    try:
        os.kill(int(info["pid"]), 0)
    except ProcessLookupError:
        return True
    except (OSError, KeyError, TypeError, ValueError):
        return False
    return False


@contextlib.contextmanager
def own(out: str, ttl: float = LEASE_TTL_S, prog: str = "run_pipeline.py") -> Iterator[dict]:
    """Holds the run directory for the `with` body; raises RunDirBusy when another run does
    (`prog` names the run in the one line that ends it if a gs:// lease cannot be renewed)."""
    if is_url(out):
        with _gcs_lease(out, ttl, prog) as info:
            yield info
        return
    os.makedirs(out, exist_ok=True)
    path = os.path.join(out, LOCAL_FILE)
    fd = try_lock(path)
    if fd is None:
        raise _busy(out, _read_json(path))
    try:
        info = _me(ttl)
        info.pop("expires")  # the kernel ends a local lock with its process
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(info).encode(), 0)
        yield info
    finally:
        os.close(fd)


def _read_json(path: str) -> dict | None:
    try:
        with open(path) as f:
            value = json.load(f)
    except (OSError, ValueError):
        return None
    return value if isinstance(value, dict) else None


def _bucket_blob(url: str):
    from google.auth.credentials import AnonymousCredentials
    from google.cloud import storage

    if os.environ.get("STORAGE_EMULATOR_HOST"):
        client = storage.Client(project="local", credentials=AnonymousCredentials())
    else:
        client = storage.Client()
    bucket, _, prefix = url.removeprefix("gs://").partition("/")
    name = f"{prefix.rstrip('/')}/{LEASE_OBJECT}" if prefix else LEASE_OBJECT
    return client.bucket(bucket), name


@contextlib.contextmanager
def _gcs_lease(out: str, ttl: float, prog: str) -> Iterator[dict]:
    from google.api_core import exceptions as gexc

    bucket, name = _bucket_blob(out)
    info = _me(ttl)
    blob = bucket.blob(name)
    try:
        blob.upload_from_string(json.dumps(info), if_generation_match=0, timeout=_GCS_TIMEOUT_S)
    except gexc.PreconditionFailed:
        held = bucket.get_blob(name, timeout=_GCS_TIMEOUT_S)
        other = json.loads(held.download_as_bytes(timeout=_GCS_TIMEOUT_S)) if held else None
        if (
            held is not None
            and other
            and time.time() < other.get("expires", 0)
            and not (_dead_here(other))
        ):
            raise _busy(out, other) from None
        log.warning("%s: taking over the lease of a finished or dead run (%s)", out, other)
        generation = held.generation if held is not None else 0
        try:
            blob.upload_from_string(
                json.dumps(info), if_generation_match=generation, timeout=_GCS_TIMEOUT_S
            )
        except gexc.PreconditionFailed:  # another run took it over first
            raise _busy(out, _peek(bucket, name)) from None
    stop = threading.Event()
    renewer = threading.Thread(
        target=_renew, args=(out, blob, info, ttl, stop, prog), name="run-dir-lease", daemon=True
    )
    renewer.start()
    try:
        yield info
    finally:
        stop.set()
        if deadlines.unreachable(out) is None:  # in an outage the lease simply expires
            renewer.join(timeout=_GCS_TIMEOUT_S)
            with contextlib.suppress(Exception):
                blob.delete(if_generation_match=blob.generation, timeout=_GCS_TIMEOUT_S)


def _peek(bucket, name: str) -> dict | None:
    try:
        return json.loads(bucket.blob(name).download_as_bytes(timeout=_GCS_TIMEOUT_S))
    except Exception:  # noqa: BLE001 - only for the message
        return None


def _renew(out: str, blob, info: dict, ttl: float, stop: threading.Event, prog: str) -> None:
    """Extends the lease every ttl/4 while the run lives (only the generation we wrote). A
    renewal is retried by the storage deadline policy (deadlines.call) only while the lease
    still holds: past that another run may take the directory, so this one stops (exit 74, or
    2 if another run has taken it over), in one line like every storage deadline."""
    from google.api_core import exceptions as gexc

    where = f"{out.rstrip('/')}/{LEASE_OBJECT}"
    while not stop.wait(ttl / 4):
        new = dict(info, expires=time.time() + ttl)
        left = info["expires"] - time.time() - ttl * _RENEW_MARGIN
        try:
            deadlines.call(
                "renew the run directory lease", where, _write, blob, new, budget_s=max(left, 0)
            )
        except gexc.PreconditionFailed:
            deadlines.fail(
                prog,
                2,
                f"{where}: the run directory lease was taken over by another run "
                f"({_peek(blob.bucket, blob.name)}); this run stops",
            )
        except Exception as e:  # noqa: BLE001 - the lease ends: so does this run
            if stop.is_set():
                return
            deadlines.fail(
                prog,
                deadlines.EXIT_STORAGE,
                f"{' '.join(str(e).split())}; the run directory lease could not be renewed "
                "before it ends (another run could take the directory); a re-run resumes",
            )
        info.update(new)


def _write(blob, info: dict) -> None:
    """One conditional write of the lease (no library retries: deadlines.call is the policy)."""
    blob.upload_from_string(
        json.dumps(info), if_generation_match=blob.generation, timeout=_GCS_TIMEOUT_S, retry=None
    )
