"""Training only: optimizer, loss, train state, train step, data iterator and the loop.

The binary's entry points (`main`, `run`, `console_entry`) are loaded on first use so that
`import scicot_jax.train.<module>` stays light.
"""

from __future__ import annotations

from typing import Any


def __getattr__(name: str) -> Any:
    if name in ("main", "run", "console_entry"):
        from scicot_jax.train import cli

        return getattr(cli, name)
    raise AttributeError(f"module 'scicot_jax.train' has no attribute {name!r}")
