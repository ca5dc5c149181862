"""One process of a pod (or a lone process): train -> eval -> infer (predict, score) through the
binaries' mains, with whatever t5x flags it is given (tests/test_multiprocess.py starts it).

  python tests/pod_driver.py MODE OUT_DIR [--multiprocess_gpu --coordinator_address=...]

MODE "all" evaluates and infers with the model it trained, "all@MODEL_DIR" with another run's
(so inference is compared on the same weights), "train=STEPS" only trains (to STEPS, resuming
from OUT_DIR's checkpoints), "pipeline" runs a pipeline's student steps.
"""

from __future__ import annotations

import os
import sys

BASE_TASK = "scicot:synthetic_coin_flip:baseline"
TASK = "pods_test:coin_flip"  # BASE_TASK plus splits "odd", "three" and "one" (5, 3, 1 rows)
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


def register_task() -> None:
    """TASK: BASE_TASK's splits plus "odd" (hosts of a 2-process run get 3 and 2 examples),
    "three" (host 3 of 4 gets none) and "one" (only host 0 gets one)."""
    import seqio

    import scicot_jax.tasks  # noqa: F401 - registers BASE_TASK

    base = seqio.get_mixture_or_task(BASE_TASK)

    def dataset_fn(split: str, shuffle_files: bool, seed: int | None = None):
        if split in SMALL_SPLITS:
            return base.source.get_dataset("validation", shuffle=False).take(SMALL_SPLITS[split])
        return base.source.get_dataset(split, shuffle=False)

    seqio.TaskRegistry.add(
        TASK,
        source=seqio.FunctionDataSource(dataset_fn, splits=[*base.splits, *SMALL_SPLITS]),
        output_features=base.output_features,
        preprocessors=base.preprocessors,
        postprocess_fn=base._postprocess_fn,  # seqio keeps no public handle
        metric_fns=base.metric_fns,
    )


SMALL_SPLITS = {"odd": 5, "three": 3, "one": 1}


def count_reads_and_decodes() -> None:
    """Prints "READ n" / "DECODED n" for every split read and every batch of examples decoded
    or scored by this process (the test checks that no host handles the whole split)."""
    from scicot_jax.data import seqio_feed
    from scicot_jax.runtime import inference

    def counted(module, name, label, count):
        fn = getattr(module, name)

        def wrapper(*args, **kwargs):
            out = fn(*args, **kwargs)
            print(f"{label} {count(args, out)}", flush=True)
            return out

        setattr(module, name, wrapper)

    counted(seqio_feed, "task_examples", "READ", lambda args, out: len(out[0]))
    counted(inference, "predict", "DECODED", lambda args, out: len(args[3]))
    counted(inference, "score", "DECODED", lambda args, out: len(args[3]))


def run_pipeline(out: str, flags: list[str]) -> None:
    """The pipeline's student steps (Sci-CoT + MoRSD: probes, scoring, two stages, the Stage-1
    student's rationales, evaluation) on a stand-in teacher, tiny students, fp32."""
    from test_pipeline_flow import fake_teacher  # tests/ is this script's directory

    from scicot_jax.pipeline import teacher_step
    from scicot_jax.pipeline.config import PipelineConfig, StudentConfig
    from scicot_jax.pipeline.run import run_pipeline as run
    from scicot_jax.runtime import partitioning as part

    given = dict(f[2:].split("=", 1) for f in flags if "=" in f)
    if "process_count" in given:
        part.initialize_distributed(
            given["coordinator_address"], int(given["process_count"]), int(given["process_index"])
        )
    teacher_step.run = fake_teacher
    cfg = PipelineConfig(
        task="synthetic_mc",
        out=f"{out}/pipeline",
        methods=("scicot+morsd:2",),
        limits={"train": 12, "validation": 5, "test": 6},  # 5: hosts get 3 and 2
        student=StudentConfig(steps=2, batch_size=8, eval_batch_size=8, vocab_size=256),
    )
    run(cfg, log=lambda s: print(s, flush=True))


def main(mode: str, out: str, flags: list[str]) -> None:
    from scicot_jax import eval as eval_bin
    from scicot_jax import infer
    from scicot_jax.train import cli as train

    register_task()
    count_reads_and_decodes()
    if mode == "pipeline":
        run_pipeline(out, flags)
        return

    task = [f"--gin.MIXTURE_OR_TASK_NAME={TASK}", f"--gin.TASK_FEATURE_LENGTHS={LENGTHS}"]
    steps = int(mode.split("=")[1]) if mode.startswith("train=") else 3
    devices = int(os.environ["XLA_FLAGS"].split("=")[-1]) * int(
        dict(f[2:].split("=", 1) for f in flags if "=" in f).get("process_count", 1)
    )  # in the pod: the eval batch is one row per device
    model_dir = mode.split("@")[1] if "@" in mode else f"{out}/model"
    result = train.main(
        [
            "train",
            *flags,
            *TINY,
            "--gin_file=runs/finetune.gin",
            *task,
            f"--gin.MODEL_DIR={out}/model",
            f"--gin.TRAIN_STEPS={steps}",
            "--gin.BATCH_SIZE=8",
            f"--gin.CHECKPOINT_PERIOD={steps}",
            f"--gin.EVAL_PERIOD={0 if mode.startswith('train=') else 3}",
            "--gin.EVAL_STEPS=None",
            "--gin.SHUFFLE_TRAIN_EXAMPLES=False",  # the same global batches as one process
            "--gin.train/DatasetConfig.pack=False",
            f"--gin.eval/DatasetConfig.batch_size={devices}",
            # 2 processes, "odd": 2 eval batches of 2 rows on host 0, 1 on host 1; 4 processes,
            # "three": 1 batch on hosts 0-2, none on host 3 (it feeds zero batches)
            f"--gin.EVAL_SPLIT='{'odd' if devices <= 4 else 'three'}'",
            "--gin.train.infer_eval_dataset_cfg=None",
            "--gin.train.stats_period=1",
            "--gin.LEARNING_RATE=0.01",
            "--gin.DROPOUT_RATE=0.0",  # masks follow row positions, which differ across hosts
            "--gin.T5Config.dtype='float32'",  # bf16 rounding would follow the reduction order
        ]
    )
    if mode.startswith("all"):  # a pipeline step that must run once (the teacher): process 0 only
        import jax

        from scicot_jax.pipeline.steps import StepRunner

        def once(d):
            (d / f"ran-on-{jax.process_index()}").write_text("")
            return {"ran_on": jax.process_index()}

        got = StepRunner(f"{out}/pipeline", log=lambda _: None).run_on_process_zero("teacher", once)
        print(f"TEACHER_RESULT {got['ran_on']}", flush=True)
    if mode.startswith("train="):
        print(f"STOPPED_AT {result.step} preempted={result.preempted}", flush=True)
        return
    for split, limit in (("validation", 12), ("one", 12)):  # "one": host 1 of 2 has no rows
        eval_bin.main(
            [
                "eval",
                *flags,
                "--gin_file=runs/eval.gin",
                *task,
                f"--gin.CHECKPOINT_PATH={model_dir}",
                f"--gin.EVAL_OUTPUT_DIR={out}/eval-{split}",
                f"--gin.MIXTURE_OR_TASK_SPLIT='{split}'",
                f"--gin.evaluate.limit={limit}",
                "--gin.BATCH_SIZE=8",
            ]
        )
    for gin_file, split in (
        ("runs/infer.gin", "validation"),
        ("runs/score.gin", "validation"),
        ("runs/infer.gin", "one"),
    ):
        infer.main(
            [
                "infer",
                *flags,
                "--gin_file=runs/infer.gin",
                f"--gin_file={gin_file}",
                *task,
                f"--gin.CHECKPOINT_PATH={model_dir}",
                f"--gin.INFER_OUTPUT_DIR={out}/infer-{split}",
                f"--gin.MIXTURE_OR_TASK_SPLIT='{split}'",
                "--gin.infer.limit=12",
                "--gin.BATCH_SIZE=8",
            ]
        )


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], sys.argv[3:])
