"""The gin binaries end to end on a synthetic SeqIO task: train -> eval -> infer (predict, score)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from model_fixtures import enable_compile_cache

ROOT = Path(__file__).resolve().parents[1]
TASK = "scicot:synthetic_coin_flip:baseline"
LENGTHS = "{'inputs': 64, 'targets': 8}"
TINY = [
    "--gin_file=models/tiny.gin",
    "--gin.VOCAB_SIZE=512",
    "--gin.T5Config.d_model=16",
    "--gin.T5Config.num_heads=2",
    "--gin.T5Config.d_kv=8",
    "--gin.T5Config.d_ff=32",
    "--gin.T5Config.num_encoder_layers=1",
    "--gin.T5Config.num_decoder_layers=1",
]


@pytest.mark.slow  # ~3 min on 2 busy cores: three binaries, several compiles
def test_train_eval_infer_binaries(tmp_path, tiny_vocab_path):
    """One trained model dir feeds the eval and infer checks (one test: one training run,
    whichever xdist worker gets it)."""
    enable_compile_cache(tmp_path / "jax_cache")
    trained = _train(tmp_path / "model")
    _check_train_outputs(trained)
    _check_eval(trained)
    _check_infer(trained, tmp_path)


def _train(model_dir: Path):
    """A model dir trained for 4 steps by the train binary (checkpoints at 2 and 4)."""
    from scicot_jax import train

    result = train.main(
        [
            "train",
            *TINY,
            "--gin_file=runs/finetune.gin",
            f"--gin.MODEL_DIR={model_dir}",
            f"--gin.MIXTURE_OR_TASK_NAME={TASK}",
            f"--gin.TASK_FEATURE_LENGTHS={LENGTHS}",
            "--gin.TRAIN_STEPS=4",
            "--gin.BATCH_SIZE=4",
            "--gin.CHECKPOINT_PERIOD=2",
            "--gin.EVAL_PERIOD=4",
            "--gin.train.eval_steps=1",
            "--gin.EvaluatorConfig.num_examples=4",
            "--gin.LEARNING_RATE=0.01",
        ]
    )
    return model_dir, result


def _check_train_outputs(trained):
    model_dir, result = trained
    assert result.step == 4 and not result.preempted
    assert sorted(p.name for p in (model_dir / "checkpoints").iterdir()) == ["2", "4"]
    rows = [json.loads(line) for line in (model_dir / "train" / "metrics.jsonl").open()]
    assert rows[-1]["step"] == 4 and rows[-1]["loss"] > 0 and rows[-1]["tokens_per_s"] > 0
    ev = [json.loads(line) for line in (model_dir / "eval" / "metrics.jsonl").open()]
    assert f"{TASK}/accuracy" in ev[-1] and "loss" in ev[-1]
    assert "T5Config.d_model = 16" in (model_dir / "config.gin").read_text()
    assert list((model_dir / "train").glob("events.out.tfevents*"))


def _check_eval(trained):
    from scicot_jax import eval as eval_bin

    model_dir, _ = trained
    res = eval_bin.main(  # t5x's command line: the model gin beside runs/eval.gin
        [
            "eval",
            *TINY,
            "--gin_file=runs/eval.gin",
            f"--gin.CHECKPOINT_PATH={model_dir}",
            f"--gin.MIXTURE_OR_TASK_NAME={TASK}",
            f"--gin.TASK_FEATURE_LENGTHS={LENGTHS}",
            "--gin.CHECKPOINT_STEPS='all'",
            "--gin.evaluate.limit=4",
            "--gin.BATCH_SIZE=4",
        ]
    )
    assert sorted(res) == [2, 4]
    out = model_dir / "inference_eval"  # t5x's default output dir; train's eval wrote step 4
    lines = [json.loads(line) for line in (out / f"{TASK}-metrics.jsonl").open()]
    # one line per step: eval's step 4 replaced train's (no duplicate step rows)
    assert [r["step"] for r in lines] == [2, 4] and "accuracy" in lines[-1]
    assert lines[-1]["accuracy"] == res[4][f"{TASK}/accuracy"]
    preds = [json.loads(line) for line in (out / f"{TASK}-000004.jsonl").open()]
    assert len(preds) == 4 and {"input", "prediction", "target", "score"} <= set(preds[0])
    # the grader's fields: the metric's accuracy recomputes from the rows
    assert {"split", "parsed", "gold", "correct"} <= set(preds[0])
    assert 100 * sum(r["correct"] for r in preds) / 4 == pytest.approx(lines[-1]["accuracy"])
    assert preds[0]["input"]["inputs_pretokenized"] and (out / f"{TASK}-000002.jsonl").is_file()
    assert list(out.glob("events.out.tfevents*"))


def _check_infer(trained, tmp_path):
    from scicot_jax import infer

    model_dir, _ = trained
    out = tmp_path / "pred"
    res = infer.main(  # t5x's command line: the model gin beside runs/infer.gin
        [
            "infer",
            *TINY,
            "--gin_file=runs/infer.gin",
            f"--gin.CHECKPOINT_PATH={model_dir}",
            f"--gin.MIXTURE_OR_TASK_NAME={TASK}",
            f"--gin.TASK_FEATURE_LENGTHS={LENGTHS}",
            f"--gin.INFER_OUTPUT_DIR={out}",
            "--gin.DECODE_METHOD=sample",
            "--gin.NUM_DECODES=2",
            "--gin.TEMPERATURE=0.7",
            "--gin.infer.return_all_decodes=True",
            "--gin.infer.mode='predict_with_aux'",
            "--gin.infer.limit=3",
            "--gin.BATCH_SIZE=4",
        ]
    )
    path = out / f"{TASK}-predict_with_aux.jsonl-00000-of-00001"
    assert res == {TASK: str(path)}
    rows = [json.loads(line) for line in path.open()]
    assert len(rows) == 3 and len(rows[0]["prediction"]) == 2
    assert len(rows[0]["aux"]["scores"]) == 2 and rows[0]["inputs"]["inputs_pretokenized"]

    src = tmp_path / "in.jsonl"
    src.write_text(
        '{"id": "q1", "inputs": "A coin is heads up.", "targets": "yes"}\n'
        '{"id": "q2", "inputs": "Is it?", "targets": "no"}\n'
        '{"id": "q3", "inputs": "Is it not?", "targets": "yes"}\n'
    )
    for shard in (0, 1):  # t5x's --shard_id with infer.num_shards: one file per shard
        infer.main(
            [
                "infer",
                "--gin_file=runs/infer.gin",
                "--gin_file=runs/score.gin",
                f"--gin.CHECKPOINT_PATH={model_dir}/checkpoints/2",
                "--gin.MIXTURE_OR_TASK_NAME=None",
                f"--gin.infer.input_file={src}",
                "--gin.infer.vocabulary='demo'",
                f"--gin.TASK_FEATURE_LENGTHS={LENGTHS}",
                f"--gin.INFER_OUTPUT_DIR={out}",
                "--gin.BATCH_SIZE=4",
                f"--shard_id={shard}",
                "--gin.infer.num_shards=2",
            ]
        )
    shards = [
        [json.loads(x) for x in (out / f"in-score.jsonl-0000{i}-of-00002").open()] for i in (0, 1)
    ]
    assert [[r["inputs"]["id"] for r in rows] for rows in shards] == [["q1", "q3"], ["q2"]]
    assert all(r["score"] < 0 for rows in shards for r in rows)
    assert shards[0][0]["inputs"]["targets_pretokenized"] == "yes"

    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"id": "x", "inputs": "ok", "targets": "y"}\n{"id": "y"}\n')
    with pytest.raises(ValueError, match=r"bad.jsonl:2: field 'inputs'"):
        infer.main(
            [
                "infer",
                "--gin_file=runs/infer.gin",
                "--gin_file=runs/score.gin",
                f"--gin.CHECKPOINT_PATH={model_dir}",
                "--gin.MIXTURE_OR_TASK_NAME=None",
                f"--gin.infer.input_file={bad}",
                "--gin.infer.vocabulary='demo'",
                f"--gin.INFER_OUTPUT_DIR={tmp_path / 'x'}",
            ]
        )


def test_flag_parsing_quotes_bare_strings_like_t5x_users_expect():
    from scicot_jax.runtime import gin_utils

    args, bindings = gin_utils.parse_args(
        [
            "prog",
            "--gin_file=a.gin",
            "--gin_file=b.gin",
            "--gin.MODEL_DIR=/tmp/x",
            '--gin.NAME="q"',
            "--gin.STEPS=10",
            "--gin.M=@T5Config()",
            "--gin.L={'inputs': 4}",
        ],
        "test",
    )
    assert args.gin_file == ["a.gin", "b.gin"]
    assert bindings == [
        "MODEL_DIR = '/tmp/x'",
        'NAME = "q"',
        "STEPS = 10",
        "M = @T5Config()",
        "L = {'inputs': 4}",
    ]
    with pytest.raises(SystemExit):
        gin_utils.parse_args(["prog", "--bogus"], "test")


def test_module_entry_points_run():
    for mod in ("scicot_jax.train", "scicot_jax.eval", "scicot_jax.infer"):
        r = subprocess.run(
            [sys.executable, "-m", mod, "--help"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=120,
            env=dict(os.environ, JAX_PLATFORMS="cpu"),
        )
        assert r.returncode == 0 and "--gin_file" in r.stdout, (mod, r.stderr[-2000:])


def test_seqio_train_batches_resume_exactly(tiny_vocab_path):
    """Skipping k batches of the seeded SeqIO stream gives batch k: what exact resume relies on."""
    import numpy as np

    from scicot_jax.data.seqio_feed import DatasetConfig, train_batches

    cfg = DatasetConfig(TASK, {"inputs": 64, "targets": 8}, batch_size=4)
    full = train_batches(cfg)(0)
    first = [next(full) for _ in range(3)]
    resumed = train_batches(cfg)(2)
    again = next(resumed)
    assert set(again) >= {"encoder_input_tokens", "decoder_target_tokens", "encoder_segment_ids"}
    for k in again:
        np.testing.assert_array_equal(again[k], first[2][k], err_msg=k)


def test_packed_row_tokens_fits_the_rows_to_the_task(monkeypatch, tiny_vocab_path):
    """PACKED_ROW_TOKENS: the train binary trains on rows fitted to the task's train split
    (inputs + targets <= the budget), denser than TASK_FEATURE_LENGTHS' rows."""
    import numpy as np

    from scicot_jax import train
    from scicot_jax.data import packing
    from scicot_jax.train import trainer

    seen = []

    def fake_train(config, batches, **kwargs):  # the config and first batches, no training
        it = batches(0)
        seen.append((config, [next(it) for _ in range(3)]))
        return trainer.TrainResult(0, False, {}, {}, config.model_dir)

    monkeypatch.setattr(trainer, "train", fake_train)
    argv = ["train", *TINY, "--gin_file=runs/finetune.gin", "--gin.MODEL_DIR=/tmp/unused"]
    argv += [f"--gin.MIXTURE_OR_TASK_NAME={TASK}", "--gin.BATCH_SIZE=4"]
    argv += ["--gin.TASK_FEATURE_LENGTHS={'inputs': 128, 'targets': 128}"]
    for flag in ([], ["--gin.PACKED_ROW_TOKENS=256"]):
        train.main([*argv, *flag])
    (card, card_batches), (fitted, fitted_batches) = seen
    assert card.feature_lengths == {"inputs": 128, "targets": 128}
    assert sum(fitted.feature_lengths.values()) <= 256 and fitted.feature_lengths["targets"] < 64
    for b in fitted_batches:
        assert b["encoder_input_tokens"].shape == (4, fitted.feature_lengths["inputs"])
        assert b["decoder_target_tokens"].shape == (4, fitted.feature_lengths["targets"])

    def dense(batches):
        return np.mean([packing.density(b) for b in batches])

    assert dense(fitted_batches) >= 0.85 > dense(card_batches) + 0.4
