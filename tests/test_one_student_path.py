"""The pipeline's own student path, run as a user runs it (its CLI), gives bitwise-equal losses
and parameters through ``--student.trainer inprocess`` and ``--student.trainer gin``, packed or not."""

from __future__ import annotations

import json

import jax
import numpy as np
import pytest

from scicot_jax.pipeline import cli

ARGS = "--task synthetic_coin_flip --methods baseline --teacher.backend oracle --student.size tiny"
ARGS += " --student.steps 40 --student.batch_size 8 --limits validation=8 --limits test=8"


def _run(out, trainer: str, *extra: str) -> tuple[list[dict], dict, dict]:
    """(training metrics, results.json, final params) of one run."""
    cli.main(["run", *ARGS.split(), "--out", str(out), "--student.trainer", trainer, *extra])
    step = out / "train_baseline"
    lines = (step / "train" / "metrics.jsonl").read_text().splitlines()
    rows = [json.loads(line) for line in lines]
    keep = ("step", "loss", "accuracy", "grad_norm", "learning_rate")
    metrics = [{k: v for k, v in r.items() if any(w in k for w in keep)} for r in rows]
    results = json.loads((out / "results.json").read_text())
    from scicot_jax.runtime import inference

    params = inference.load_model(str(step), inference.checkpoint_config(str(step)))[1]
    return metrics, results, params


@pytest.mark.slow  # four 40-step trainings of the pipeline, two through SeqIO: minutes on CPU
@pytest.mark.parametrize("pack", [False, True], ids=["padded", "packed"])
def test_both_trainers_give_bitwise_equal_losses_and_params(tmp_path, pack):
    extra = ("--student.pack", "--student.packed_row_tokens", "256") if pack else ()
    m_a, r_a, p_a = _run(tmp_path / "inprocess", "inprocess", *extra)
    m_b, r_b, p_b = _run(tmp_path / "gin", "gin", *extra)
    assert len(m_a) >= 5 and any("loss" in k for k in m_a[0])
    assert m_a == m_b  # every logged step's loss, accuracy, grad norm: to the last bit
    la, lb = jax.tree.leaves(p_a), jax.tree.leaves(p_b)
    assert jax.tree.structure(p_a) == jax.tree.structure(p_b) and len(la) > 5
    for x, y in zip(la, lb):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))
    # the same steps, tokens, FLOPs and (same params) accuracy either way
    entry_a, entry_b = (dict(r["methods"]["baseline"]) for r in (r_a, r_b))
    assert entry_a.pop("seconds") > 0 and entry_b.pop("seconds") > 0
    assert entry_a == entry_b and entry_a["train_steps"] > 0
