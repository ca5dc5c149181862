#!/usr/bin/env python
"""Query a teacher LLM for rationales (see `scicot_jax.teacher.cli`); also `scicot-teacher`."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from scicot_jax.teacher.cli import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
