"""Hugging Face T5 v1.1 import/export: logits parity with transformers on a padded batch."""

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from scicot_jax.checkpoints.hf import export_hf, flatten, import_hf  # noqa: E402
from scicot_jax.model import t5  # noqa: E402

VOCAB, ENC_LEN, DEC_LEN = 96, 12, 9
TOLERANCE = 1e-4


def _hf_config(**overrides):
    kwargs = dict(
        vocab_size=VOCAB,
        d_model=32,
        d_kv=8,
        num_heads=4,
        d_ff=48,
        num_layers=2,
        num_decoder_layers=3,
        relative_attention_num_buckets=8,
        relative_attention_max_distance=16,
        feed_forward_proj="gated-gelu",
        tie_word_embeddings=False,
        dropout_rate=0.0,
        decoder_start_token_id=0,
    )
    return transformers.T5Config(**{**kwargs, **overrides})


@pytest.fixture(scope="module")
def hf_model():
    """A random v1.1 model: untied lm_head, non-trivial layer norms (HF inits them to 1)."""
    torch.manual_seed(0)
    model = transformers.T5ForConditionalGeneration(_hf_config()).eval()
    with torch.no_grad():
        # transformers >= 5 ties lm_head to shared at init even for v1.1; untie it.
        model.lm_head.weight = torch.nn.Parameter(torch.randn(VOCAB, 32))
        for name, p in model.named_parameters():
            if "layer_norm" in name:
                p.mul_(1.0 + 0.2 * torch.randn_like(p))
    return model


@pytest.fixture(scope="module")
def hf_dir(hf_model, tmp_path_factory):
    path = tmp_path_factory.mktemp("hf")
    hf_model.save_pretrained(path, safe_serialization=True)
    return path


@pytest.fixture(scope="module")
def batch():
    """Padded batch: encoder pad 0; decoder inputs = targets shifted right with start 0."""
    rng = np.random.default_rng(1)
    enc = rng.integers(2, VOCAB, size=(3, ENC_LEN))
    targets = rng.integers(2, VOCAB, size=(3, DEC_LEN))
    for row, (enc_len, dec_len) in enumerate([(ENC_LEN, DEC_LEN), (7, 5), (3, 2)]):
        enc[row, enc_len:] = 0
        targets[row, dec_len - 1] = 1  # EOS
        targets[row, dec_len:] = 0
    dec_in = np.concatenate([np.zeros((3, 1), targets.dtype), targets[:, :-1]], axis=1)
    return enc.astype(np.int32), dec_in.astype(np.int32), targets.astype(np.int32)


def _hf_logits(model, batch):
    enc, dec_in, _ = batch
    with torch.no_grad():
        out = model(
            input_ids=torch.from_numpy(enc).long(),
            attention_mask=torch.from_numpy(enc > 0).long(),
            decoder_input_ids=torch.from_numpy(dec_in).long(),
        )
    return out.logits.numpy()


def _our_logits(config, params, batch):
    enc, dec_in, targets = batch
    logits = t5.Transformer(config).apply(
        {"params": params}, enc, dec_in, targets, enable_dropout=False
    )
    return np.asarray(logits)


def _assert_same(a, b):
    a, b = dict(flatten(a)), dict(flatten(b))
    assert sorted(a) == sorted(b)
    for path, x in a.items():
        np.testing.assert_array_equal(x, b[path], err_msg="/".join(path))


def _max_diff(a, b, targets):
    # Positions whose target is padding are masked by t5x and not by HF; compare real ones.
    real = targets > 0
    return float(np.abs(a[real] - b[real]).max())


def test_import_matches_hf_logits(hf_model, hf_dir, batch):
    config, params = import_hf(hf_dir, dtype="float32")
    assert (config.num_encoder_layers, config.num_decoder_layers) == (2, 3)
    shapes = {p: tuple(x.shape) for p, x in flatten(params)}
    assert shapes == {p: tuple(x.shape) for p, x in flatten(t5.param_shapes(config))}
    diff = _max_diff(_our_logits(config, params, batch), _hf_logits(hf_model, batch), batch[2])
    print(f"import parity max abs diff {diff:.2e}")
    assert diff <= TOLERANCE


def test_export_loads_in_transformers(hf_dir, batch, tmp_path):
    config, params = import_hf(hf_dir, dtype="float32")
    export_hf(config, params, tmp_path / "out")
    reloaded = transformers.T5ForConditionalGeneration.from_pretrained(tmp_path / "out").eval()
    diff = _max_diff(_our_logits(config, params, batch), _hf_logits(reloaded, batch), batch[2])
    print(f"export parity max abs diff {diff:.2e}")
    assert diff <= TOLERANCE
    again_config, again = import_hf(tmp_path / "out", dtype="float32")
    assert again_config == config
    _assert_same(params, again)


def test_pytorch_bin_and_sharded_safetensors(hf_model, hf_dir, tmp_path):
    _, reference = import_hf(hf_dir)
    bin_dir, shard_dir = tmp_path / "bin", tmp_path / "sharded"
    bin_dir.mkdir()
    shutil.copy(hf_dir / "config.json", bin_dir / "config.json")
    # state_dict also carries encoder/decoder.embed_tokens copies, as old hub files do.
    torch.save(hf_model.state_dict(), bin_dir / "pytorch_model.bin")
    hf_model.save_pretrained(shard_dir, max_shard_size="20KB")
    assert (shard_dir / "model.safetensors.index.json").exists()
    for directory in (bin_dir, shard_dir):
        _, params = import_hf(directory)
        _assert_same(reference, params)


def _edit_config(src: Path, dst: Path, **changes) -> Path:
    shutil.copytree(src, dst)
    data = json.loads((dst / "config.json").read_text())
    data.update(changes)
    (dst / "config.json").write_text(json.dumps(data))
    return dst


def test_rejects_non_v11_and_mismatches(hf_dir, tmp_path):
    with pytest.raises(ValueError, match="feed_forward_proj"):
        import_hf(_edit_config(hf_dir, tmp_path / "relu", feed_forward_proj="relu"))
    tied = _edit_config(
        hf_dir, tmp_path / "tied", tie_word_embeddings=True, scale_decoder_outputs=True
    )
    with pytest.raises(ValueError, match="tied"):
        import_hf(tied)
    with pytest.raises(ValueError, match=r"DenseReluDense\.wi_0\.weight.*\(48, 32\).*\(64, 32\)"):
        import_hf(_edit_config(hf_dir, tmp_path / "dff", d_ff=64))
    with pytest.raises(KeyError, match="decoder.block.3"):
        import_hf(_edit_config(hf_dir, tmp_path / "layers", num_decoder_layers=4))
    with pytest.raises(FileNotFoundError, match="config.json"):
        import_hf(tmp_path)
    config, params = import_hf(hf_dir)
    params["decoder"]["logits_dense"]["kernel"] = np.zeros((32, VOCAB + 1), np.float32)
    with pytest.raises(ValueError, match=r"logits_dense/kernel.*\(32, 97\).*\(32, 96\)"):
        export_hf(config, params, tmp_path / "bad_export")
