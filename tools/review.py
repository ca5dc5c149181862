#!/usr/bin/env python
"""Review rationales and read a run's report in a browser (see `scicot_jax.review.cli`); also
`scicot-review`."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from scicot_jax.review.cli import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
