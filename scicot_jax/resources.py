"""Where the shipped task cards and gin configs live: the source tree, or an installed copy."""

import sys
from pathlib import Path

_SOURCE_ROOT = Path(__file__).resolve().parents[1]


def resource_dir(name: str) -> Path:
    """`tasks` or `gin`: the checkout's folder (editable install), else the installed data files."""
    for root in (_SOURCE_ROOT, Path(sys.prefix) / "share" / "scicot_jax"):
        if (root / name).is_dir():
            return root / name
    return _SOURCE_ROOT / name  # missing everywhere: callers report this path
