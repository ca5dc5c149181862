"""One process of a pod (or a lone process): train -> eval -> infer (predict, score) through the
binaries' mains, with whatever t5x flags it is given (tests/test_multiprocess.py starts it).

  python tests/pod_driver.py MODE OUT_DIR [--multiprocess_gpu --coordinator_address=...]

MODE "all" evaluates and infers with the model it trained, "all@MODEL_DIR" with another run's
(so inference is compared on the same weights), "train=STEPS" only trains (to STEPS, resuming
from OUT_DIR's checkpoints).
"""

from __future__ import annotations

import sys

BASE_TASK = "scicot:synthetic_coin_flip:baseline"
TASK = "pods_test:coin_flip"  # BASE_TASK plus an "odd" split of 5 validation examples
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
    """TASK: BASE_TASK's splits plus "odd" (hosts of a 2-process run get 3 and 2 examples)."""
    import seqio

    import scicot_jax.tasks  # noqa: F401 - registers BASE_TASK

    base = seqio.get_mixture_or_task(BASE_TASK)

    def dataset_fn(split: str, shuffle_files: bool, seed: int | None = None):
        if split == "odd":
            return base.source.get_dataset("validation", shuffle=False).take(5)
        return base.source.get_dataset(split, shuffle=False)

    seqio.TaskRegistry.add(
        TASK,
        source=seqio.FunctionDataSource(dataset_fn, splits=[*base.splits, "odd"]),
        output_features=base.output_features,
        preprocessors=base.preprocessors,
        postprocess_fn=base._postprocess_fn,  # seqio keeps no public handle
        metric_fns=base.metric_fns,
    )


def main(mode: str, out: str, flags: list[str]) -> None:
    from scicot_jax import eval as eval_bin
    from scicot_jax import infer
    from scicot_jax.train import cli as train

    register_task()

    task = [f"--gin.MIXTURE_OR_TASK_NAME={TASK}", f"--gin.TASK_FEATURE_LENGTHS={LENGTHS}"]
    steps = int(mode.split("=")[1]) if mode.startswith("train=") else 3
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
            "--gin.eval/DatasetConfig.batch_size=4",
            "--gin.EVAL_SPLIT='odd'",  # 5 examples: 2 eval batches of 2 on host 0, 1 on host 1
            "--gin.train.infer_eval=False",
            "--gin.train.log_period=1",
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
    eval_bin.main(
        [
            "eval",
            *flags,
            "--gin_file=runs/eval.gin",
            *task,
            f"--gin.CHECKPOINT_PATH={model_dir}",
            f"--gin.EVAL_OUTPUT_DIR={out}/eval",
            "--gin.evaluate.limit=12",
            "--gin.BATCH_SIZE=8",
        ]
    )
    for gin_file in ("runs/infer.gin", "runs/score.gin"):
        infer.main(
            [
                "infer",
                *flags,
                "--gin_file=runs/infer.gin",
                f"--gin_file={gin_file}",
                *task,
                f"--gin.CHECKPOINT_PATH={model_dir}",
                f"--gin.INFER_OUTPUT_DIR={out}/infer",
                "--gin.infer.limit=12",
                "--gin.BATCH_SIZE=8",
            ]
        )


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], sys.argv[3:])
