"""Orbax params checkpoints and the HF <-> orbax conversion CLI."""

import sys
from pathlib import Path

import jax
import numpy as np
import pytest

from scicot_jax.checkpoints import params_io
from scicot_jax.checkpoints.hf import flatten
from scicot_jax.model.config import T5Config
from scicot_jax.model.t5 import param_shapes

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tools"))
import convert_checkpoint  # noqa: E402


@pytest.fixture(scope="module")
def tiny():
    config = T5Config.preset("tiny", dtype="float32")
    rng = np.random.default_rng(0)
    # Random values of the real shapes; no need to compile the model's init here.
    return config, jax.tree.map(
        lambda s: rng.normal(size=s.shape).astype(s.dtype), param_shapes(config)
    )


def _assert_same(a, b):
    a, b = dict(flatten(a)), dict(flatten(b))
    assert sorted(a) == sorted(b)
    for path, x in a.items():
        np.testing.assert_array_equal(np.asarray(x), np.asarray(b[path]), err_msg="/".join(path))


def test_save_load_roundtrip(tiny, tmp_path):
    config, params = tiny
    params_io.save_params(tmp_path / "ckpt", params, config)
    loaded_config, loaded = params_io.load_params(tmp_path / "ckpt")
    assert loaded_config == config
    _assert_same(params, loaded)
    assert all(isinstance(x, jax.Array) for _, x in flatten(loaded))
    with pytest.raises(FileExistsError, match="params"):
        params_io.save_params(tmp_path / "ckpt", params, config)
    params_io.save_params(tmp_path / "ckpt", params, config, force=True)


def test_load_errors_name_paths(tmp_path):
    with pytest.raises(FileNotFoundError, match=str(tmp_path / "config.json")):
        params_io.load_params(tmp_path)
    (tmp_path / "config.json").write_text('{"d_model": 8,\n oops}')
    with pytest.raises(ValueError, match=r"config.json:2"):
        params_io.load_params(tmp_path)


def test_cli_hf_roundtrip(tiny, tmp_path, capsys):
    pytest.importorskip("transformers")
    config, params = tiny
    params_io.save_params(tmp_path / "a", params, config)
    assert convert_checkpoint.main(["orbax-to-hf", str(tmp_path / "a"), str(tmp_path / "hf")]) == 0
    assert (tmp_path / "hf" / "model.safetensors").exists()
    assert convert_checkpoint.main(["hf-to-orbax", str(tmp_path / "hf"), str(tmp_path / "b")]) == 0
    back_config, back = params_io.load_params(tmp_path / "b")
    _assert_same(params, back)
    assert back_config.d_model == config.d_model
    assert (
        convert_checkpoint.main(["orbax-to-hf", str(tmp_path / "nope"), str(tmp_path / "x")]) == 1
    )
    assert "nope" in capsys.readouterr().err


def test_cli_exports_trainer_checkpoint(tiny, tmp_path):
    from scicot_jax.checkpoints.hf import import_hf
    from scicot_jax.checkpoints.orbax import Checkpoints
    from scicot_jax.model.scan import scan_params

    config, params = tiny
    scanned_config = config.replace(scan_layers=True)
    ckpts = Checkpoints(tmp_path / "model", async_save=False)
    meta = {"model": scanned_config.to_dict()}
    ckpts.save(7, scan_params(params, config), {"count": np.zeros((), np.int32)}, {"pos": 0}, meta)
    ckpts.close()
    assert (
        convert_checkpoint.main(["orbax-to-hf", str(tmp_path / "model"), str(tmp_path / "hf")]) == 0
    )
    _, back = import_hf(tmp_path / "hf", dtype="float32")
    _assert_same(params, back)
