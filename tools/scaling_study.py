#!/usr/bin/env python
"""Scaling study over D, train fraction, student size and method; see scicot_jax/pipeline/study_cli.py."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout, uninstalled

from scicot_jax.pipeline.study_cli import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
