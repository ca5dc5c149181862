#!/usr/bin/env python
"""Distillation pipeline (baseline, Fine-tune-CoT, Sci-CoT, MoRSD); see scicot_jax/pipeline/cli.py."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout, uninstalled

from scicot_jax.pipeline.cli import main  # noqa: E402

if __name__ == "__main__":
    main()
