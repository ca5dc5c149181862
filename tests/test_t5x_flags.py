"""t5x's binary flags and macros: accepted with t5x's meaning, and every macro read by something."""

from __future__ import annotations

import pytest

import gin
from scicot_jax.runtime import gin_utils

TASK = "scicot:synthetic_coin_flip:baseline"
REQUIRED = ["MODEL_DIR = '/tmp/m'", f"MIXTURE_OR_TASK_NAME = '{TASK}'"]


@pytest.fixture(autouse=True)
def _clean_gin():
    import scicot_jax.eval  # noqa: F401 - registers the binaries' configurables
    import scicot_jax.infer  # noqa: F401
    import scicot_jax.train.cli  # noqa: F401

    gin.clear_config()
    yield
    gin.clear_config()


def _value(param: str):
    """The value a binding resolves to (through macros)."""
    v = gin.query_parameter(param)
    return v.scoped_configurable_fn() if isinstance(v, gin.config.ConfigurableReference) else v


def test_t5x_flags_parse_with_t5x_names(tmp_path):
    args, bindings = gin_utils.parse_args(
        [
            "train",
            "--gin_file=runs/finetune.gin",
            f"--tfds_data_dir={tmp_path}/tfds",
            f"--seqio_additional_cache_dirs={tmp_path}/a,{tmp_path}/b",
            "--multiprocess_gpu",
            "--coordinator_address=127.0.0.1:1234",
            "--process_count=2",
            "--process_index=1",
            "--alsologtostderr",
            "--gin.TRAIN_STEPS=3",
        ],
        "t",
    )
    assert args.multiprocess_gpu and args.coordinator_address == "127.0.0.1:1234"
    assert (args.process_count, args.process_index) == (2, 1)
    assert args.seqio_additional_cache_dirs == [f"{tmp_path}/a", f"{tmp_path}/b"]
    assert args.tfds_data_dir == f"{tmp_path}/tfds" and bindings == ["TRAIN_STEPS = 3"]
    from absl import flags

    assert flags.FLAGS.alsologtostderr
    with pytest.raises(SystemExit):  # as in t5x, the process flags only mean something with it
        gin_utils.parse_args(["train", "--process_count=2"], "t")


def test_seqio_flags_reach_seqio(tmp_path):
    import seqio

    args, _ = gin_utils.parse_args(
        [
            "eval",
            f"--tfds_data_dir={tmp_path}/tfds",
            f"--seqio_additional_cache_dirs={tmp_path}/cache",
        ],
        "t",
    )
    gin_utils.apply_t5x_flags(args)
    assert f"{tmp_path}/cache" in seqio.get_global_cache_dirs()
    from seqio import utils as seqio_utils

    assert seqio_utils._TFDS_DATA_DIR_OVERRIDE == f"{tmp_path}/tfds"
    seqio.set_global_cache_dirs([])
    seqio.set_tfds_data_dir_override(None)


@pytest.mark.slow  # TensorFlow Datasets' mock and a SeqIO pipeline: ~1 min on 2 busy cores
def test_tfds_data_dir_is_where_tfds_cards_read(tmp_path, tiny_vocab):
    """--tfds_data_dir replaces a TFDS card's data_dir, as it does every Task's in t5x."""
    import seqio
    import tensorflow as tf
    import tensorflow_datasets as tfds

    from scicot_jax import tasks as T
    from scicot_jax.data.seqio_feed import task_examples

    (tmp_path / "ai2_arc").mkdir()  # prepared data would live here
    rows = {
        "id": ["x1"],
        "question": ["Which is hot?"],
        "answerKey": ["B"],
        "choices": {"text": tf.constant([["ice", "fire"]]), "label": tf.constant([["A", "B"]])},
    }
    name = T.register_card("arc_easy_tfds", vocabulary=tiny_vocab)[0]
    args, _ = gin_utils.parse_args(["eval", f"--tfds_data_dir={tmp_path}"], "t")
    gin_utils.apply_t5x_flags(args)
    try:
        with tfds.testing.mock_data(
            as_dataset_fn=lambda self, split, **kw: tf.data.Dataset.from_tensor_slices(rows),
            policy=tfds.testing.MockPolicy.USE_CODE,
        ):
            exs, _ = task_examples(name, "validation", {"inputs": 64, "targets": 8})
            assert len(exs) == 1 and "Which is hot?" in exs[0]["inputs_pretokenized"]
            seqio.set_tfds_data_dir_override(str(tmp_path / "elsewhere"))
            with pytest.raises(ValueError, match="not prepared under data_dir .*elsewhere"):
                task_examples(name, "validation", {"inputs": 64, "targets": 8})
    finally:
        seqio.set_tfds_data_dir_override(None)


def test_misspelt_macro_is_an_error_naming_the_nearest():
    gin_utils.parse_gin(["models/tiny.gin", "runs/finetune.gin"], [*REQUIRED, "TRAIN_STEPZ = 5"])
    with pytest.raises(ValueError, match="'TRAIN_STEPZ'.*did you mean 'TRAIN_STEPS'"):
        gin_utils.check_macros_used()


def test_macro_overridden_by_a_direct_binding_is_not_an_error():
    gin_utils.parse_gin(
        ["models/tiny.gin", "runs/finetune.gin"], [*REQUIRED, "train.eval_steps = 1"]
    )
    gin_utils.check_macros_used()
    assert _value("train.eval_steps") == 1


@pytest.mark.parametrize(
    "files, macro, value, param",
    [
        ("finetune", "Z_LOSS", 0.5, "LossConfig.z_loss"),
        ("finetune", "BATCH_SIZE", 8, "train/DatasetConfig.batch_size"),
        (
            "finetune",
            "TASK_FEATURE_LENGTHS",
            {"inputs": 8, "targets": 4},
            "train/DatasetConfig.task_feature_lengths",
        ),
        ("finetune", "LABEL_SMOOTHING", 0.1, "LossConfig.label_smoothing"),
        ("finetune", "LOSS_NORMALIZING_FACTOR", 1024.0, "LossConfig.loss_normalizing_factor"),
        ("finetune", "USE_CACHED_TASKS", True, "train/DatasetConfig.use_cached"),
        ("finetune", "USE_CACHED_TASKS", True, "eval/DatasetConfig.use_cached"),
        ("finetune", "SHUFFLE_TRAIN_EXAMPLES", False, "train/DatasetConfig.shuffle"),
        ("finetune", "PACKED_ROW_TOKENS", 2048, "train/DatasetConfig.packed_row_tokens"),
        ("finetune", "RANDOM_SEED", 7, "train.random_seed"),
        ("finetune", "EVAL_STEPS", 3, "train.eval_steps"),
        ("finetune", "EVAL_PERIOD", 3, "train.eval_period"),
        ("finetune", "INITIAL_CHECKPOINT_PATH", "/ckpt", "CheckpointConfig.initial_path"),
        ("finetune", "DROPOUT_RATE", 0.3, "T5Config.dropout_rate"),
        ("finetune", "EVALUATOR_NUM_EXAMPLES", 8, "EvaluatorConfig.num_examples"),
        ("finetune", "JSON_WRITE_N_RESULTS", 2, "EvaluatorConfig.json_write_n_results"),
        ("finetune", "USE_HARDWARE_RNG", False, "train.use_hardware_rng"),
        ("eval", "EVAL_OUTPUT_DIR", "/out", "evaluate.output_dir"),
        ("eval", "USE_CACHED_TASKS", True, "evaluate.use_cached"),
        ("eval", "MIXTURE_OR_TASK_SPLIT", "test", "evaluate.split"),
        ("infer", "INFER_OUTPUT_DIR", "/out", "infer.output_dir"),
        ("infer", "USE_CACHED_TASKS", True, "infer.use_cached"),
        ("infer", "MIXTURE_OR_TASK_SPLIT", "test", "infer.split"),
    ],
)
def test_t5x_macros_reach_their_parameters(files, macro, value, param):
    """Each t5x macro sets the parameter the binary reads (its effect is tested there)."""
    extra = {
        "finetune": ["models/tiny.gin", "runs/finetune.gin"],
        "eval": ["runs/eval.gin"],
        "infer": ["runs/infer.gin"],
    }[files]
    base = REQUIRED if files == "finetune" else [f"MIXTURE_OR_TASK_NAME = '{TASK}'"]
    gin_utils.parse_gin(extra, base)
    before = _value(param)
    gin.clear_config()
    gin_utils.parse_gin(extra, [*base, f"{macro} = {value!r}"])
    gin_utils.check_macros_used()
    assert _value(param) == value != before


@pytest.mark.parametrize(
    "macro", ["TRAIN_STEPS_RELATIVE", "EVALUATOR_USE_MEMORY_CACHE", "VOCABULARY", "OPTIMIZER"]
)
def test_t5x_macros_we_do_not_support_are_refused(macro):
    """t5x macros without a meaning here fail the run instead of being ignored (the vocabulary
    comes with the task, the optimizer from OptimizerConfig)."""
    gin_utils.parse_gin(["models/tiny.gin", "runs/finetune.gin"], [*REQUIRED, f"{macro} = 1"])
    with pytest.raises(ValueError, match=f"gin macro '{macro}' is set but nothing reads it"):
        gin_utils.check_macros_used()


def test_use_hardware_rng_picks_the_dropout_key(monkeypatch, tiny_vocab_path):
    """USE_HARDWARE_RNG: XLA's RngBitGenerator keys (ours default True), else threefry."""
    from scicot_jax import train
    from scicot_jax.train import trainer

    seen = []

    def fake_train(config, *args, **kwargs):  # records the config instead of training
        seen.append(config)
        return trainer.TrainResult(0, False, {}, {}, config.model_dir)

    monkeypatch.setattr(trainer, "train", fake_train)
    argv = ["train", "--gin_file=models/tiny.gin", "--gin_file=runs/finetune.gin"]
    argv += ["--gin.MODEL_DIR=/tmp/unused", f"--gin.MIXTURE_OR_TASK_NAME={TASK}"]
    for flag in ([], ["--gin.USE_HARDWARE_RNG=False"]):
        train.main([*argv, *flag])
    assert [c.dropout_rng_impl for c in seen] == ["rbg", "threefry2x32"]


def test_json_write_n_results_limits_the_rows_written(tmp_path):
    """JSON_WRITE_N_RESULTS as SeqIO's JSONLogger: first N rows; 0 no rows file; None all."""
    from scicot_jax.runtime.task_eval import write_t5x_outputs

    keys = ("input", "target", "prediction", "score", "split", "parsed", "gold", "correct")
    rows = [dict(dict.fromkeys(keys, i), task="t") for i in range(3)]
    for n, written in ((None, 3), (2, 2), (0, None)):
        out = tmp_path / str(n)
        write_t5x_outputs(out, 5, {"t/accuracy": 1.0}, rows, n)
        path = out / "t-000005.jsonl"
        assert (len(path.read_text().splitlines()) if path.exists() else None) == written
        assert (out / "t-metrics.jsonl").is_file()


def test_use_cached_tasks_reads_seqio_cache_dirs(tmp_path, tiny_vocab_path):
    """USE_CACHED_TASKS=True reads caches only: an uncached task fails naming it."""
    import seqio

    from scicot_jax.data.seqio_feed import task_examples

    exs, _ = task_examples(TASK, "validation", {"inputs": 64, "targets": 8}, "scicot_jax.tasks", 2)
    assert len(exs) == 2
    seqio.add_global_cache_dirs([str(tmp_path)])
    try:
        with pytest.raises(AssertionError, match="does not exist in any of the task cache"):
            task_examples(
                TASK,
                "validation",
                {"inputs": 64, "targets": 8},
                "scicot_jax.tasks",
                use_cached=True,
            )
    finally:
        seqio.set_global_cache_dirs([])


@pytest.mark.slow  # two 1-step trainings of a tiny model in-process: ~30 s
def test_random_seed_none_draws_a_logged_seed_per_run(tmp_path, tiny_vocab_path, caplog):
    """RANDOM_SEED=None as in t5x: each run draws a seed at start and logs it; runs differ."""
    import json
    import re

    from model_fixtures import enable_compile_cache
    from test_binaries import LENGTHS, TINY

    from scicot_jax import train

    enable_compile_cache(tmp_path / "jax_cache")
    seeds, losses = [], []
    for run in ("a", "b"):
        caplog.clear()
        with caplog.at_level("INFO"):
            train.main(
                [
                    "train",
                    *TINY,
                    "--gin_file=runs/finetune.gin",
                    f"--gin.MODEL_DIR={tmp_path / run}",
                    f"--gin.MIXTURE_OR_TASK_NAME={TASK}",
                    f"--gin.TASK_FEATURE_LENGTHS={LENGTHS}",
                    "--gin.TRAIN_STEPS=1",
                    "--gin.BATCH_SIZE=4",
                    "--gin.EVAL_PERIOD=0",
                    "--gin.RANDOM_SEED=None",
                ]
            )
        drawn = re.findall(r"RANDOM_SEED=None: using seed (\d+)", caplog.text)
        assert len(drawn) == 1, caplog.text[-2000:]
        seeds.append(int(drawn[0]))
        rows = [json.loads(x) for x in (tmp_path / run / "train" / "metrics.jsonl").open()]
        losses.append(rows[-1]["loss"])
    assert seeds[0] != seeds[1]
    assert losses[0] != losses[1]  # other initial params (same data order: the data seed is 42)


def test_absl_log_dir_and_verbosity_take_effect(tmp_path):
    """absl's --log_dir writes the log there and -v 1 lets DEBUG through (in a subprocess:
    absl's flags and handlers are process-wide)."""
    import subprocess
    import sys

    code = (
        "import logging, sys\n"
        "from scicot_jax.runtime import gin_utils\n"
        "args, _ = gin_utils.parse_args(sys.argv, 't')\n"
        "gin_utils.apply_t5x_flags(args)\n"
        "logging.getLogger('probe').debug('debug line reached the log')\n"
    )
    r = subprocess.run(
        [sys.executable, "-c", code, f"--log_dir={tmp_path}", "-v", "1"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert r.returncode == 0, r.stderr[-2000:]
    logs = [p.read_text() for p in tmp_path.iterdir() if p.is_file()]
    assert any("debug line reached the log" in text for text in logs), (logs, r.stderr[-2000:])


def test_info_lines_reach_stderr_after_an_import_logged_a_warning():
    """A module-level logging.warning() before the binary starts gives the root a WARNING
    handler; the binaries' INFO lines (step losses) must still reach stderr."""
    import subprocess
    import sys

    code = (
        "import logging\n"
        "from scicot_jax.runtime import gin_utils\n"
        "logging.warning('an import warned first')\n"
        "gin_utils.setup_logging('INFO')\n"
        "logging.getLogger('probe').info('info line reached stderr')\n"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "info line reached stderr" in r.stderr, r.stderr[-2000:]


def test_initialization_timeout_bounds_the_wait_for_peers():
    """--initialization_timeout=3: a host whose coordinator never comes up gives up after
    seconds (jax's default wait is 300 s)."""
    import os
    import socket
    import subprocess
    import sys

    with socket.socket() as s:  # a loopback port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    code = (
        "import sys\n"
        "from scicot_jax.runtime import gin_utils\n"
        "args, _ = gin_utils.parse_args(sys.argv, 't')\n"
        "gin_utils.apply_t5x_flags(args)\n"
    )
    flags = ["--multiprocess_gpu", f"--coordinator_address=127.0.0.1:{port}"]
    flags += ["--process_count=2", "--process_index=1", "--initialization_timeout=3"]
    r = subprocess.run(
        [sys.executable, "-c", code, *flags],
        capture_output=True,
        text=True,
        timeout=150,  # far below the 300 s it would wait without the flag
        env={**os.environ, "JAX_PLATFORMS": "cpu"},
    )
    assert r.returncode != 0 and "DEADLINE_EXCEEDED" in r.stderr, r.stderr[-2000:]
