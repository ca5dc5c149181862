"""T5 v1.1 / Flan-T5 student model: config, network, decoding, scoring, FLOPs."""

from scicot_jax.model.config import PRESET_NAMES, T5Config
from scicot_jax.model.decoding import DecodeConfig, generate
from scicot_jax.model.flops import flops_per_example
from scicot_jax.model.scan import scan_params, unscan_params
from scicot_jax.model.scoring import score
from scicot_jax.model.t5 import Transformer, init_params, logical_axes, num_params, param_shapes

__all__ = [
    "DecodeConfig",
    "PRESET_NAMES",
    "T5Config",
    "Transformer",
    "flops_per_example",
    "generate",
    "init_params",
    "logical_axes",
    "num_params",
    "param_shapes",
    "scan_params",
    "score",
    "unscan_params",
]
