"""T5 v1.1 / Flan-T5 configuration: one frozen dataclass with named presets."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jax.numpy as jnp

from scicot_jax.files import read_json

ATTENTION_IMPLS = ("xla", "dot_product")
REMAT_POLICIES = ("none", "full", "dots")

# T5 v1.1 / Flan-T5 sizes (d_model, num_heads, d_kv, d_ff, encoder layers, decoder layers).
_PRESETS: dict[str, dict[str, int]] = {
    "tiny": dict(
        d_model=64, num_heads=4, d_kv=16, d_ff=128, num_encoder_layers=2, num_decoder_layers=2
    ),
    "small": dict(
        d_model=512, num_heads=6, d_kv=64, d_ff=1024, num_encoder_layers=8, num_decoder_layers=8
    ),
    "base": dict(
        d_model=768, num_heads=12, d_kv=64, d_ff=2048, num_encoder_layers=12, num_decoder_layers=12
    ),
    "large": dict(
        d_model=1024, num_heads=16, d_kv=64, d_ff=2816, num_encoder_layers=24, num_decoder_layers=24
    ),
    "xl": dict(
        d_model=2048, num_heads=32, d_kv=64, d_ff=5120, num_encoder_layers=24, num_decoder_layers=24
    ),
    "xxl": dict(
        d_model=4096,
        num_heads=64,
        d_kv=64,
        d_ff=10240,
        num_encoder_layers=24,
        num_decoder_layers=24,
    ),
}
PRESET_NAMES = tuple(_PRESETS)


@dataclass(frozen=True)
class T5Config:
    """Hyperparameters of a T5 v1.1 encoder-decoder (gated-GELU, RMS norm, untied logits)."""

    vocab_size: int = 32128
    d_model: int = 512
    num_heads: int = 6
    d_kv: int = 64
    d_ff: int = 1024
    num_encoder_layers: int = 8
    num_decoder_layers: int = 8
    dropout_rate: float = 0.0
    relative_attention_num_buckets: int = 32
    relative_attention_max_distance: int = 128
    layer_norm_epsilon: float = 1e-6
    dtype: str = "bfloat16"  # activations
    param_dtype: str = "float32"
    attention_impl: str = "xla"  # "xla" einsum path | "dot_product" = jax.nn.dot_product_attention
    scan_layers: bool = False
    remat_policy: str = "none"  # "none" | "full" | "dots"
    pad_id: int = 0
    eos_id: int = 1
    decoder_start_id: int = 0

    def __post_init__(self) -> None:
        if self.attention_impl not in ATTENTION_IMPLS:
            raise ValueError(
                f"T5Config.attention_impl={self.attention_impl!r}; expected one of {ATTENTION_IMPLS}"
            )
        if self.remat_policy not in REMAT_POLICIES:
            raise ValueError(
                f"T5Config.remat_policy={self.remat_policy!r}; expected one of {REMAT_POLICIES}"
            )
        for name in ("dtype", "param_dtype"):
            try:
                jnp.dtype(getattr(self, name))
            except TypeError as e:
                raise ValueError(f"T5Config.{name}={getattr(self, name)!r} is not a dtype") from e
        for name in (
            "vocab_size",
            "d_model",
            "num_heads",
            "d_kv",
            "d_ff",
            "relative_attention_num_buckets",
        ):
            if int(getattr(self, name)) <= 0:
                raise ValueError(f"T5Config.{name}={getattr(self, name)!r} must be positive")
        if not 0.0 <= self.dropout_rate < 1.0:
            raise ValueError(f"T5Config.dropout_rate={self.dropout_rate!r} must be in [0, 1)")

    @classmethod
    def preset(cls, name: str, **overrides: Any) -> T5Config:
        """Named T5 v1.1 / Flan-T5 size with optional field overrides."""
        if name not in _PRESETS:
            raise ValueError(f"unknown T5 preset {name!r}; expected one of {PRESET_NAMES}")
        return cls(**{**_PRESETS[name], **overrides})

    def replace(self, **overrides: Any) -> T5Config:
        """Copy with some fields changed."""
        return dataclasses.replace(self, **overrides)

    @property
    def activation_dtype(self) -> jnp.dtype:
        return jnp.dtype(self.dtype)

    @property
    def half_precision(self) -> bool:
        """bf16/fp16 activations: the accelerator forms (t5x's), else the float32 (CPU) ones.

        Where XLA:TPU and XLA:CPU want different forms of the same math ([B, L, ...]
        contractions vs tokens flattened to one axis), half-precision configs take t5x's;
        float32 configs keep theirs, so their numbers stay bit for bit.
        """
        return self.activation_dtype in (jnp.dtype(jnp.bfloat16), jnp.dtype(jnp.float16))

    @property
    def weight_dtype(self) -> jnp.dtype:
        return jnp.dtype(self.param_dtype)

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-serialisable dict of all fields."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any], *, source: str = "config") -> T5Config:
        """Inverse of `to_dict`; unknown keys raise naming `source`."""
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ValueError(
                f"{source}: unknown T5Config field(s) {unknown}; known: {sorted(known)}"
            )
        return cls(**d)


def read_json_file(file: Path, missing: str) -> Any:
    """A checkpoint's JSON file; a missing file says `missing`, bad JSON names file:line."""
    if not file.exists():
        raise FileNotFoundError(f"{file}: missing ({missing})")
    return read_json(file)
