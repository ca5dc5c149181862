#!/usr/bin/env python
"""Scaling study over D, train fraction, student size and method; see scicot_jax/pipeline/study_cli.py."""

import sys

from scicot_jax.pipeline.study_cli import main

if __name__ == "__main__":
    sys.exit(main())
