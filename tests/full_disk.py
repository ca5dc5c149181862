"""A real full disk for a subprocess: a small tmpfs mounted in a private user+mount namespace.

`unshare -rm` needs no root where unprivileged user namespaces are allowed (most Linux CI);
writes past the size fail with ENOSPC exactly as on a full persistent disk.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

_MOUNT = 'mount -t tmpfs -o size="$1" tmpfs "$0" && shift && exec "$@"'


def full_disk_cmd(mount_at: Path, size: str, cmd: list[str]) -> list[str]:
    """`cmd` run with a `size` tmpfs (e.g. "64k") mounted at `mount_at` (created here)."""
    mount_at.mkdir(parents=True, exist_ok=True)
    return ["unshare", "-rm", "sh", "-c", _MOUNT, str(mount_at), size, *cmd]


def available() -> bool:
    """Whether this machine lets us mount a tmpfs in a user namespace."""
    if not shutil.which("unshare"):
        return False
    probe = subprocess.run(
        ["unshare", "-rm", "sh", "-c", "mount -t tmpfs -o size=4k tmpfs /mnt"],
        capture_output=True,
    )
    return probe.returncode == 0
