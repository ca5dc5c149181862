"""Which paths are object-storage URLs (stdlib only: files.py and paths.py both ask)."""

from __future__ import annotations

import os

URL_SCHEMES = ("gs://",)


def is_url(path: str | os.PathLike[str]) -> bool:
    """gs:// (object storage, reached through scicot_jax.paths; local paths stay stdlib-only)."""
    return os.fspath(path).startswith(URL_SCHEMES)
