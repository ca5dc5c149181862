"""One source of T5 sizes: the gin model files (ours and the upstream-t5x ones) match the presets
in scicot_jax/model/config.py, field by field."""

from __future__ import annotations

import re

import pytest

import gin
from scicot_jax.model import T5Config
from scicot_jax.model.config import PRESET_NAMES
from scicot_jax.runtime import gin_utils

GIN = gin_utils.GIN_DIR
OURS = sorted((GIN / "models").glob("*.gin"))
T5X = sorted((GIN / "t5x" / "models").glob("*.gin"))
# t5x.examples.t5.network.T5Config field -> ours
T5X_FIELDS = {
    "emb_dim": "d_model",
    "num_heads": "num_heads",
    "head_dim": "d_kv",
    "mlp_dim": "d_ff",
    "num_encoder_layers": "num_encoder_layers",
    "num_decoder_layers": "num_decoder_layers",
    "vocab_size": "vocab_size",
}


def test_every_gin_model_names_a_preset():
    assert OURS and T5X
    for path in OURS + T5X:
        assert path.stem in PRESET_NAMES, f"{path}: no preset {path.stem!r} in model/config.py"


@pytest.mark.parametrize("path", OURS, ids=lambda p: p.stem)
def test_our_gin_model_builds_the_preset(path):
    """Parsed by gin and built, the file's MODEL is the preset (bf16, T5's 32128 vocab)."""
    gin.clear_config()
    try:
        gin_utils.parse_gin([str(path)], [])
        built = gin_utils.plain(gin.query_parameter("%MODEL").scoped_configurable_fn())
    finally:
        gin.clear_config()
    # Layout (scanned layers, remat) is each size's own choice for its slices, not the preset's.
    layout = {"scan_layers": built.scan_layers, "remat_policy": built.remat_policy}
    assert built == T5Config.preset(path.stem, vocab_size=32128, dtype="bfloat16", **layout)


@pytest.mark.parametrize("path", T5X, ids=lambda p: p.stem)
def test_t5x_gin_model_matches_the_preset(path):
    """t5x is not installable, so its network.T5Config block is read as text."""
    block = path.read_text().split("network.T5Config:", 1)[1]
    values = {
        T5X_FIELDS[k]: int(v)
        for k, v in re.findall(r"^\s+(\w+) = (\d+)", block, re.MULTILINE)
        if k in T5X_FIELDS
    }
    preset = T5Config.preset(path.stem, vocab_size=32128)
    assert values == {f: getattr(preset, f) for f in T5X_FIELDS.values()}, path
