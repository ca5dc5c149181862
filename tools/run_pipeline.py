#!/usr/bin/env python
"""Distillation pipeline (baseline, Fine-tune-CoT, Sci-CoT, MoRSD); see scicot_jax/pipeline/cli.py."""

from scicot_jax.pipeline.cli import main

if __name__ == "__main__":
    main()
