"""T5 v1.1 / Flan-T5 student model: config, network, decoding, scoring, FLOPs."""

from scicot_jax.model.config import PRESET_NAMES, T5Config
from scicot_jax.model.t5 import Transformer, init_params, logical_axes, num_params, param_shapes

__all__ = [
    "PRESET_NAMES",
    "T5Config",
    "Transformer",
    "init_params",
    "logical_axes",
    "num_params",
    "param_shapes",
]
