"""T5 v1.1 / Flan-T5 student model: config, network, decoding, scoring, FLOPs, HF weights."""

from typing import Any

from scicot_jax.model.config import PRESET_NAMES, T5Config
from scicot_jax.model.decoding import generate
from scicot_jax.model.flops import flops_per_example
from scicot_jax.model.scan import scan_params, unscan_params
from scicot_jax.model.scoring import score
from scicot_jax.model.t5 import Transformer, init_params, logical_axes, num_params, param_shapes

__all__ = [
    "PRESET_NAMES",
    "T5Config",
    "Transformer",
    "export_hf",
    "flops_per_example",
    "generate",
    "import_hf",
    "init_params",
    "logical_axes",
    "num_params",
    "param_shapes",
    "scan_params",
    "score",
    "unscan_params",
]


def __getattr__(name: str) -> Any:
    """`import_hf` / `export_hf` live in hf.py, imported on first use."""
    if name in ("import_hf", "export_hf"):
        from scicot_jax.model import hf

        return getattr(hf, name)
    raise AttributeError(f"module 'scicot_jax.model' has no attribute {name!r}")
