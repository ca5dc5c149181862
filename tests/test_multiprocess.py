"""A pod on loopback (2 or 4 processes, jax.distributed + gloo, 2 fake CPU devices each) equals
one process with all the devices: the same global batches and mesh, through train -> eval ->
infer (predict, score) started with t5x's flags, and through the pipeline's student steps
(tests/pod_driver.py). Each host reads and decodes only its shard; hosts without rows neither
raise nor hang."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
DRIVER = ROOT / "tests" / "pod_driver.py"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _env(devices: int) -> dict[str, str]:
    return dict(
        os.environ,
        JAX_PLATFORMS="cpu",
        XLA_FLAGS=f"--xla_force_host_platform_device_count={devices}",
        PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
    )


def _run(out: Path, processes: int, devices: int, mode: str = "all", timeout: int = 900) -> None:
    """Runs the driver in `processes` processes and waits for all (each must exit 0)."""
    procs = _start(out, processes, devices, mode)
    try:
        for i, p in enumerate(procs):
            rc = p.wait(timeout=timeout)
            assert rc == 0, f"process {i} exited {rc}:\n{_log(out, i)[-3000:]}"
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()


def _log(out: Path, i: int) -> str:
    return (out.parent / f"{out.name}-{i}.log").read_text()


def _start(out: Path, processes: int, devices: int, mode: str) -> list[subprocess.Popen]:
    port = _free_port()
    procs = []
    for i in range(processes):
        flags = (
            [
                "--multiprocess_gpu",
                f"--coordinator_address=127.0.0.1:{port}",
                f"--process_count={processes}",
                f"--process_index={i}",
            ]
            if processes > 1
            else []
        )
        log = open(out.parent / f"{out.name}-{i}.log", "a")
        procs.append(
            subprocess.Popen(
                [sys.executable, str(DRIVER), mode, str(out), *flags],
                cwd=ROOT,
                env=_env(devices),
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        )
    return procs


def _jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.open()]


@pytest.mark.slow
@pytest.mark.parametrize("processes", [2, pytest.param(4, marks=pytest.mark.long)])
def test_pod_equals_one_process(tmp_path, processes):
    """`processes` processes x 2 devices equal 1 process x 2 * processes devices."""
    from scicot_jax.runtime.inference import load_model
    from scicot_jax.runtime.multihost import local_limit

    pod, one = tmp_path / "pod", tmp_path / "one"
    _run(pod, processes, 2)
    _run(one, 1, 2 * processes, f"all@{pod}/model")  # trains its own model, infers with the pod's

    # the pipeline's teacher step ran on process 0 only; the others read its result
    assert [p.name for p in (pod / "pipeline/teacher").glob("ran-on-*")] == ["ran-on-0"]
    assert all("TEACHER_RESULT 0" in _log(pod, i) for i in range(processes))

    # train: per-step loss, then final params
    losses = [[r["loss"] for r in _jsonl(d / "model/train/metrics.jsonl")] for d in (pod, one)]
    assert len(losses[0]) == 3
    np.testing.assert_allclose(losses[0], losses[1], rtol=1e-6)
    # teacher-forced eval: 2 processes over 5 examples, host 0 had 2 batches, host 1 one;
    # 4 processes over 3, host 3 none: hosts that run out feed zero batches (no raise, no hang)
    evals = [_jsonl(d / "model/eval/metrics.jsonl")[-1] for d in (pod, one)]
    np.testing.assert_allclose(evals[0]["loss"], evals[1]["loss"], rtol=1e-6)
    assert evals[0]["tokens"] == evals[1]["tokens"] > 0
    params = [load_model(d / "model/checkpoints/3")[1] for d in (pod, one)]
    flat = [dict(_flatten(p)) for p in params]
    assert flat[0].keys() == flat[1].keys()
    for k in flat[0]:
        np.testing.assert_allclose(flat[0][k], flat[1][k], rtol=1e-6, atol=1e-7, err_msg=k)

    # eval binary (process 0 wrote t5x's files to EVAL_OUTPUT_DIR), infer predict (greedy) and
    # score: both runs on the pod's weights
    task = "pods_test:coin_flip"
    ev = [_jsonl(d / f"eval-validation/{task}-000003.jsonl") for d in (pod, one)]
    assert len(ev[0]) == 12
    assert [(r["input"], r["prediction"]) for r in ev[0]] == [
        (r["input"], r["prediction"]) for r in ev[1]
    ]
    np.testing.assert_allclose([r["score"] for r in ev[0]], [r["score"] for r in ev[1]], rtol=1e-5)
    for split in ("validation", "one"):  # "one": host 1 read and decoded nothing, no hang
        metrics = [_jsonl(d / f"eval-{split}/{task}-metrics.jsonl") for d in (pod, one)]
        assert metrics[0] == metrics[1]
    assert len(_jsonl(pod / f"eval-one/{task}-000003.jsonl")) == 1
    for split, n in (("validation", 12), ("one", 1)):
        pred = [
            _jsonl(d / f"infer-{split}/{task}-predict.jsonl-00000-of-00001") for d in (pod, one)
        ]
        assert len(pred[0]) == n and pred[0] == pred[1]
    sc = [_jsonl(d / f"infer-validation/{task}-score.jsonl-00000-of-00001") for d in (pod, one)]
    assert [r["inputs"] for r in sc[0]] == [r["inputs"] for r in sc[1]]
    np.testing.assert_allclose(
        [r["score"] for r in sc[0]], [r["score"] for r in sc[1]], rtol=1e-5, atol=1e-5
    )

    # each host read and decoded only its shard (every processes-th example): per call (eval 12,
    # eval "one" 1, predict 12, score 12, predict "one" 1) the hosts' counts add up to one's
    for what in ("READ", "DECODED"):
        assert _counts(_log(one, 0), what) == [12, 1, 12, 12, 1], what
        for h in range(processes):
            n, first = local_limit(12, h, processes), int(h == 0)
            assert _counts(_log(pod, h), what) == [n, first, n, n, first], (what, h)


def _counts(log: str, what: str) -> list[int]:
    return [int(line.split()[1]) for line in log.splitlines() if line.startswith(f"{what} ")]


def _flatten(tree, prefix=""):
    for k, v in tree.items():
        if isinstance(v, dict):
            yield from _flatten(v, f"{prefix}{k}/")
        else:
            yield f"{prefix}{k}", np.asarray(v)


@pytest.mark.slow
def test_sigterm_to_one_process_stops_both_and_resume_is_exact(tmp_path):
    """SIGTERM to process 1 only: both stop after the same step with a checkpoint; resuming
    with 2 processes reproduces the uninterrupted 2-process run bitwise."""
    import signal
    import time

    from scicot_jax.runtime.inference import load_model

    steps = 30
    cut, ref = tmp_path / "cut", tmp_path / "ref"
    procs = _start(cut, 2, 2, f"train={steps}")
    try:
        deadline = time.time() + 900
        metrics = cut / "model/train/metrics.jsonl"  # step 1 done (whatever the log level)
        while not (metrics.exists() and metrics.read_text().strip()):
            assert time.time() < deadline and procs[1].poll() is None, _log(cut, 1)[-3000:]
            time.sleep(0.2)
        procs[1].send_signal(signal.SIGTERM)
        rcs = [p.wait(timeout=600) for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    assert rcs == [0, 0], [_log(cut, i)[-3000:] for i in (0, 1)]
    stops = {line for i in (0, 1) for line in _log(cut, i).splitlines() if "STOPPED_AT" in line}
    assert len(stops) == 1, stops  # the same step on both processes
    stopped = int(stops.pop().split()[1])
    assert 0 < stopped < steps
    ckpts = sorted(int(p.name) for p in (cut / "model/checkpoints").iterdir() if p.name.isdigit())
    assert ckpts[-1] == stopped

    _run(cut, 2, 2, f"train={steps}")  # resume
    _run(ref, 2, 2, f"train={steps}")  # uninterrupted
    losses = [
        {r["step"]: r["loss"] for r in _jsonl(d / "model/train/metrics.jsonl")} for d in (cut, ref)
    ]
    assert all(losses[0][s] == losses[1][s] for s in range(stopped + 1, steps + 1))
    got, want = (
        dict(_flatten(load_model(d / f"model/checkpoints/{steps}")[1])) for d in (cut, ref)
    )
    for k in want:
        np.testing.assert_array_equal(got[k], want[k], err_msg=k)


@pytest.mark.slow
def test_pipeline_student_steps_two_processes_equal_one(tmp_path):
    """Sci-CoT + MoRSD's student steps on 2 processes x 2 devices equal 1 x 4: every stage's
    final loss, MoRSD's difficulty scores, the Stage-1 student's rationales and the evaluation,
    each host decoding its share through infer's files."""
    pod, one = tmp_path / "pod", tmp_path / "one"
    _run(pod, 2, 2, "pipeline")
    _run(one, 1, 4, "pipeline")
    runs = [d / "pipeline" for d in (pod, one)]
    slug = "scicot-morsd_d2"

    done = [{p.parent.name: json.loads(p.read_text()) for p in r.glob("*/DONE.json")} for r in runs]
    trained = sorted(k for k, v in done[1].items() if "final_loss" in v["result"])
    assert len(trained) == 4, trained  # two MoRSD probes, Stage 1, Stage 2
    for k in trained:
        np.testing.assert_allclose(
            done[0][k]["result"]["final_loss"], done[1][k]["result"]["final_loss"], rtol=1e-6
        )
    rd = [[r["rd"] for r in _jsonl(r / f"select_{slug}/decisions.jsonl")] for r in runs]
    assert any(x is not None for x in rd[1])
    np.testing.assert_allclose(
        [np.nan if x is None else x for x in rd[0]],
        [np.nan if x is None else x for x in rd[1]],
        rtol=1e-5,
    )
    for f in (
        f"rationales_{slug}/predictions.jsonl",
        f"eval_{slug}/predictions_validation.jsonl",
        f"eval_{slug}/predictions_test.jsonl",
    ):
        assert _jsonl(runs[0] / f) == _jsonl(runs[1] / f), f
    res = [json.loads((r / "results.json").read_text())["methods"]["scicot+morsd:2"] for r in runs]
    assert res[0]["accuracy"] == res[1]["accuracy"]
    # the predictions are infer's t5x files: Stage-1 rationales for 12 + 5 + 6 questions
    for split, n in (("train", 12), ("validation", 5), ("test", 6)):
        rows = _jsonl(runs[0] / f"rationales_{slug}/infer/{split}-predict.jsonl-00000-of-00001")
        assert len(rows) == n
    # every decode and score call: the two hosts' shares add up to the one process's count
    counts = [_counts(_log(pod, i), "DECODED") for i in (0, 1)] + [_counts(_log(one, 0), "DECODED")]
    assert counts[2] and [a + b for a, b in zip(counts[0], counts[1])] == counts[2], counts
    assert all(a < c for a, c in zip(counts[0], counts[2]) if c > 1), counts
