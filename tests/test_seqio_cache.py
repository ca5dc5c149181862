"""USE_CACHED_TASKS=True trains on a SeqIO cache written by seqio's own cache_tasks_main (Apache
Beam, DirectRunner) for one of our tasks, found through t5x's --seqio_additional_cache_dirs."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from test_binaries import TINY

ROOT = Path(__file__).resolve().parents[1]
CARD = "synthetic_coin_flip"
RUN = "cached"
TASK = f"scicot:{CARD}:stage2:{RUN}"  # stage 2 has exactly the splits the run holds
LENGTHS = {"inputs": 160, "targets": 8}


def _rationale(split: str, i: int) -> str:
    return f"Rationale number {i} of the {split} split."


def _write_run(run_dir: Path, ids: dict[str, list[str]]) -> None:
    """A Stage-1 student run: one rationale per example id, per split."""
    from scicot_jax.data.store import RationaleRecord, RationaleStore

    store = RationaleStore.create(run_dir, {"card": CARD, "name": RUN, "teacher": "test"})
    for split, split_ids in ids.items():
        for i, ex_id in enumerate(split_ids):
            store.append(
                RationaleRecord(
                    ex_id,
                    0,
                    _rationale(split, i),
                    None,
                    None,
                    "student:x",
                    "stage1",
                    0.0,
                    split=split,
                )
            )
    store.close()


def _cache_tasks_main(cache: Path, rationale_root: Path) -> None:
    """seqio's binary, unmodified, as a user runs it on our task module."""
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "seqio.scripts.cache_tasks_main",
            "--module_import=scicot_jax.tasks",
            f"--tasks={TASK}",
            f"--output_cache_dir={cache}",
            "--pipeline_options=--runner=DirectRunner",
            "--min_shards=2",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
        env=dict(os.environ, SCICOT_RATIONALE_ROOT=str(rationale_root), JAX_PLATFORMS="cpu"),
    )
    assert r.returncode == 0, r.stderr[-4000:]


@pytest.mark.slow  # cache_tasks_main (TF + Beam) in a subprocess, then 2 train steps: ~1-2 min
def test_training_reads_a_cache_made_by_cache_tasks_main(tmp_path, tiny_vocab_path):
    import seqio

    from scicot_jax import tasks as T
    from scicot_jax import train
    from scicot_jax.data import formats
    from scicot_jax.data.seqio_feed import task_examples
    from scicot_jax.data.sources import read_examples

    train_exs = list(read_examples(CARD, "train", limit=12))
    ids = {
        "train": [ex.id for ex in train_exs],
        "validation": [ex.id for ex in read_examples(CARD, "validation", limit=4)],
    }
    run_dir = tmp_path / "rationales" / RUN
    _write_run(run_dir, ids)
    cache = tmp_path / "seqio_cache"
    _cache_tasks_main(cache, tmp_path / "rationales")
    task_dir = cache / seqio.get_task_dir_from_name(TASK)
    assert (task_dir / "COMPLETED").is_file()
    info = json.loads((task_dir / "info.train.json").read_text())
    assert info["num_shards"] == 2
    stats = json.loads((task_dir / "stats.train.json").read_text())
    assert stats["examples"] == 12

    # The source goes away: every record now names an example that does not exist, so only
    # the cache can still produce this task's rows.
    shutil.rmtree(run_dir)
    _write_run(run_dir, {s: [f"gone-{s}-{i}" for i in range(len(v))] for s, v in ids.items()})
    T.register_run_dir(run_dir)
    with pytest.raises(KeyError, match="matches no example"):
        task_examples(TASK, "train", LENGTHS)

    try:
        seqio.add_global_cache_dirs([str(cache)])
        rows, _ = task_examples(TASK, "train", LENGTHS, use_cached=True)
        expected = [formats.stage2(ex, _rationale("train", i))[0] for i, ex in enumerate(train_exs)]
        assert sorted(r["inputs_pretokenized"] for r in rows) == sorted(expected)
        # a user's mixture of cached tasks (how big data is preprocessed) reads the same cache
        if "cached_mix" in seqio.MixtureRegistry.names():
            seqio.MixtureRegistry.remove("cached_mix")
        seqio.MixtureRegistry.add("cached_mix", [TASK], default_rate=1.0)
        mixed, _ = task_examples("cached_mix", "train", LENGTHS, use_cached=True)
        assert sorted(r["inputs"] for r in mixed) == sorted(r["inputs"] for r in rows)
        seqio.set_global_cache_dirs([])
        T.register_run_dir(run_dir)  # a fresh Task: seqio remembers where it found a cache

        result = train.main(
            [
                "train",
                *TINY,
                "--gin_file=runs/finetune.gin",
                f"--seqio_additional_cache_dirs={cache}",
                f"--gin.MODEL_DIR={tmp_path / 'model'}",
                f"--gin.MIXTURE_OR_TASK_NAME={TASK}",
                f"--gin.TASK_FEATURE_LENGTHS={LENGTHS}",
                "--gin.USE_CACHED_TASKS=True",
                "--gin.TRAIN_STEPS=2",
                "--gin.BATCH_SIZE=4",
                "--gin.EVAL_PERIOD=2",
                "--gin.EVAL_STEPS=1",
                "--gin.train.infer_eval_dataset_cfg=None",
            ]
        )
    finally:
        seqio.set_global_cache_dirs([])
    assert result.step == 2 and not result.preempted
    rows = [json.loads(x) for x in (tmp_path / "model" / "train" / "metrics.jsonl").open()]
    assert rows[-1]["step"] == 2 and rows[-1]["loss"] > 0
    evals = [json.loads(x) for x in (tmp_path / "model" / "eval" / "metrics.jsonl").open()]
    assert evals[-1]["loss"] > 0  # the validation split came from the cache too
