"""Decoding settings travel as one DecodeConfig: from the infer binary's gin bindings (macros
and `DecodeConfig.*`) through inference.predict into generate; bad settings are one line."""

from __future__ import annotations

import json

import jax
import pytest

from scicot_jax import infer
from scicot_jax.checkpoints.params_io import save_params
from scicot_jax.model import DecodeConfig, T5Config, init_params
from scicot_jax.runtime.gin_checks import GinValueError

LENGTHS = "{'inputs': 16, 'targets': 8}"


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    """A tiny random T5 with the demo vocabulary's 512 ids, as a save_params dir."""
    config = T5Config.preset(
        "tiny", vocab_size=512, d_model=16, num_heads=2, d_kv=8, d_ff=32,
        num_encoder_layers=1, num_decoder_layers=1, dtype="float32",
    )  # fmt: skip
    path = tmp_path_factory.mktemp("decode") / "ckpt"
    save_params(path, init_params(config, jax.random.key(0)), config)
    return path


def _infer(checkpoint, tmp_path, name, *bindings):
    """Predictions per row of three questions, through the infer binary and runs/infer.gin."""
    src = tmp_path / "in.jsonl"
    src.write_text("".join(json.dumps({"inputs": q}) + "\n" for q in ("Heads?", "Tails?", "Why")))
    out = tmp_path / name
    written = infer.main(
        [
            "infer",
            "--gin_file=runs/infer.gin",
            f"--gin.CHECKPOINT_PATH={checkpoint}",
            "--gin.MIXTURE_OR_TASK_NAME=None",
            f"--gin.infer.input_file={src}",
            "--gin.infer.vocabulary='demo'",
            f"--gin.TASK_FEATURE_LENGTHS={LENGTHS}",
            f"--gin.INFER_OUTPUT_DIR={out}",
            "--gin.BATCH_SIZE=4",
            *bindings,
        ]
    )
    (path,) = written.values()
    return [json.loads(line)["prediction"] for line in open(path)]


def test_gin_bindings_reach_decoding(checkpoint, tmp_path, tiny_vocab_path):
    greedy8 = _infer(checkpoint, tmp_path, "g8")
    greedy5 = _infer(checkpoint, tmp_path, "g5", "--gin.DecodeConfig.max_decode_length=5")
    # 5 new tokens: the start of the 8-token text, shorter where EOS did not come first.
    assert all(b.startswith(a) for a, b in zip(greedy5, greedy8)), (greedy5, greedy8)
    assert any(len(a) < len(b) for a, b in zip(greedy5, greedy8)), (greedy5, greedy8)
    # Sampling keeps only the likeliest token under top_k=1: every sample is the greedy text.
    # Without top_k reaching generate, temperature-1 samples of this model would differ.
    samples = _infer(
        checkpoint,
        tmp_path,
        "s",
        "--gin.DECODE_METHOD='sample'",
        "--gin.NUM_DECODES=3",
        "--gin.DecodeConfig.top_k=1",
        "--gin.DecodeConfig.max_decode_length=5",
        "--gin.infer.return_all_decodes=True",
    )
    assert samples == [[g] * 3 for g in greedy5]


def _eval_decodes(checkpoint, tmp_path, monkeypatch, name, *bindings):
    """The DecodeConfigs the eval binary (runs/eval.gin) decodes four coin-flip questions with."""
    from scicot_jax import eval as eval_bin
    from scicot_jax.runtime import inference

    seen, predict = [], inference.predict

    def spy(*args, decode, **kw):
        seen.append(decode)
        return predict(*args, decode=decode, **kw)

    monkeypatch.setattr(inference, "predict", spy)
    eval_bin.main(
        [
            "eval",
            "--gin_file=runs/eval.gin",
            f"--gin.CHECKPOINT_PATH={checkpoint}",
            "--gin.MIXTURE_OR_TASK_NAME='scicot:synthetic_coin_flip:baseline'",
            f"--gin.TASK_FEATURE_LENGTHS={LENGTHS}",
            f"--gin.EVAL_OUTPUT_DIR='{tmp_path / name}'",
            "--gin.evaluate.limit=4",
            "--gin.BATCH_SIZE=4",
            *bindings,
        ]
    )
    return seen


def test_eval_decodes_with_its_decode_config(checkpoint, tmp_path, monkeypatch):
    """The eval binary takes a DecodeConfig as infer does (`evaluate.decode`, greedy up to the
    targets' length by default), bound by `DecodeConfig.*`."""
    (default,) = _eval_decodes(checkpoint, tmp_path, monkeypatch, "full")
    assert default == DecodeConfig(max_decode_length=8)
    (short,) = _eval_decodes(
        checkpoint, tmp_path, monkeypatch, "short", "--gin.DecodeConfig.max_decode_length=2"
    )
    assert short == DecodeConfig(max_decode_length=2)


def test_bad_decoding_settings_are_one_line(checkpoint, tmp_path):
    with pytest.raises(GinValueError, match=r"^NUM_DECODES: expected an int > 0, got 0$"):
        _infer(checkpoint, tmp_path, "bad", "--gin.NUM_DECODES=0")
    with pytest.raises(ValueError, match=r"^DecodeConfig.method='nucleus'; expected one of"):
        DecodeConfig(method="nucleus")
    with pytest.raises(ValueError, match=r"top_p=1.5 \(in \(0, 1\]\)"):
        DecodeConfig(method="sample", top_p=1.5)
    assert DecodeConfig().with_length(8).max_decode_length == 8
    assert DecodeConfig(max_decode_length=5).with_length(8).max_decode_length == 5
