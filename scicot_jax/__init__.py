"""Chain-of-thought distillation into T5 students in JAX (t5x / SeqIO / gin compatible)."""

from scicot_jax import platforms as _platforms

_platforms.defaults()  # before anything imports jax (scicot_jax/platforms.py says why)
