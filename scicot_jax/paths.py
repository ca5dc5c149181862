"""One path type for every path a user gives: local or `gs://`, through etils.epath.

`pathlib.Path("gs://b/x")` collapses `//` into a local `gs:/b/x`; `as_path` keeps URLs intact
and makes local paths absolute. epath reaches `gs://` through gcsfs (fsspec), the same route
orbax takes, so one set of credentials and one endpoint serve params, metrics and outputs.
"""

from __future__ import annotations

import os
from typing import Any

from etils import epath

from scicot_jax.urls import is_url

# TensorFlow's GCS filesystem has no endpoint override and pulls TF into core modules; gcsfs
# honours STORAGE_EMULATOR_HOST and Cloud TPU VM credentials alike.
os.environ.setdefault("EPATH_USE_TF", "false")

Path = epath.Path
PathLike = epath.PathLike


def as_path(path: PathLike) -> epath.Path:
    """An epath.Path: URLs as given, local paths (or file:// URLs) expanded and absolute."""
    path = os.fspath(path)
    if is_url(path):
        return epath.Path(path)
    path = path.removeprefix("file://")
    return epath.Path(os.path.abspath(os.path.expanduser(path)))


def copy_tree(src: PathLike, dst: PathLike) -> epath.Path:
    """Copies the directory `src` into `dst` (either may be gs://), files overwritten."""
    src, dst = as_path(src), as_path(dst)
    if not src.is_dir():
        raise FileNotFoundError(f"{src} is not a directory")
    dst.mkdir(parents=True, exist_ok=True)
    for child in src.iterdir():
        if child.is_dir():
            copy_tree(child, dst / child.name)
        else:
            (dst / child.name).write_bytes(child.read_bytes())
    return dst


class Mirror:
    """A local working copy of a gs:// directory for code that writes plain files: filled from
    the URL on entry (so a restarted job resumes), pushed back by `sync()` and on exit, each
    time only the files changed since the last push."""

    def __init__(self, url: PathLike, local: str | os.PathLike):
        self.url, self.local = as_path(url), os.path.abspath(local)
        self._pushed: dict[str, tuple[int, int]] = {}

    def __enter__(self) -> Mirror:
        self.pull()
        return self

    def pull(self) -> None:
        """Fills the local copy from the URL (nothing there yet is fine); an outage is retried
        with backoff and then ends the run in bounded time (runtime.deadlines)."""
        from scicot_jax.runtime import deadlines

        deadlines.call("read", self.url, self._pull)
        self._pushed = self._stamps()

    def _pull(self) -> None:
        from scicot_jax.runtime.deadlines import surely

        if surely(self.url, self.url.is_dir()):  # an outage is not an empty run dir
            copy_tree(self.url, self.local)
        os.makedirs(self.local, exist_ok=True)

    def sync(self) -> None:
        """Pushes the files changed since the last pull or push (bounded as `pull`)."""
        from scicot_jax.runtime import deadlines

        stamps = self._stamps()
        for rel, stamp in stamps.items():
            if self._pushed.get(rel) != stamp:
                deadlines.call("write", self.url / rel, self._push, rel)
                self._pushed[rel] = stamp  # a retried sync pushes only what is left

    def _push(self, rel: str) -> None:
        dst = self.url / rel
        dst.parent.mkdir(parents=True, exist_ok=True)
        with open(os.path.join(self.local, rel), "rb") as f:
            dst.write_bytes(f.read())

    def __exit__(self, exc_type: Any, *exc: Any) -> None:
        from scicot_jax.runtime.deadlines import StorageError

        if not (exc_type and issubclass(exc_type, StorageError)):  # else a second wait, in vain
            self.sync()

    def _stamps(self) -> dict[str, tuple[int, int]]:
        out = {}
        for root, _, files in os.walk(self.local):
            for name in files:
                st = os.stat(os.path.join(root, name))
                out[os.path.relpath(os.path.join(root, name), self.local)] = (
                    st.st_mtime_ns,
                    st.st_size,
                )
        return out
