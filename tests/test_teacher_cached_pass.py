"""The cached pass in worker processes: the same store as in-process, no worker outliving its run
(an early stop, an error, kill -9 of the run), and Ctrl-C or SIGTERM stopping a long pass."""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import pytest

from scicot_jax.data.cards import load_card
from scicot_jax.data.synthetic import generate
from scicot_jax.teacher import cached_pass, runner
from scicot_jax.teacher.batch import CRASH_ENV
from scicot_jax.teacher.cache import Cache
from scicot_jax.teacher.cached_pass import POOL_MIN_JOBS, CacheReader, _Worker, pool_size
from scicot_jax.teacher.jobs import JobRequests
from scicot_jax.teacher.protocol import GenRequest, GenResponse
from scicot_jax.teacher.runner import RunConfig, TeacherRun

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = generate("arithmetic", "train", n=300, difficulty=2)
SAMPLES = 4  # 1,200 jobs


class Deterministic:
    """Answers from the request alone: right or wrong, stopped or truncated, by its hash."""

    provider = "openai-chat"

    def __init__(self) -> None:
        self.sent = 0

    async def generate(self, req: GenRequest) -> GenResponse:
        self.sent += 1
        h = int(hashlib.sha256(req.key.encode()).hexdigest(), 16)
        # Some answers right: a number of the question (the grader takes the last one).
        answer = req.prompt.split("How many")[0][-2:] if h % 3 else str(h % 97)
        text = f" Step {h % 7}: so it is {h % 11}. Therefore, the answer is {answer}."
        return GenResponse(text, "length" if h % 5 == 0 else "stop", 30 + h % 9, 12)

    async def aclose(self) -> None:
        pass


def _cfg(prompt: str, workers: int | None, **kw) -> RunConfig:
    return RunConfig(
        backend="openai",
        model="m",
        prompt=prompt,
        samples=SAMPLES,
        temperature=0.7,
        progress=False,
        workers=workers,
        **kw,
    )


def _run(cfg: RunConfig, cache: Path, out: Path, examples=EXAMPLES) -> tuple[dict, int]:
    backend = Deterministic()
    run = TeacherRun(
        cfg, "synthetic_arithmetic", lambda: iter(examples), cache, out, backend=backend
    )
    summary = asyncio.run(run.run())
    for volatile in ("elapsed_s", "out_dir"):
        summary.pop(volatile)
    return summary, backend.sent


@pytest.mark.parametrize("prompt", ["zero_shot_cot", "answer_conditioned"])
def test_workers_write_the_store_an_in_process_pass_writes(tmp_path, prompt, monkeypatch):
    monkeypatch.setattr(runner, "CHUNK", 64)  # 19 chunks: more than the workers hold at once
    # A cache that answers two thirds of the questions; the rest are sent after the pass.
    cache = tmp_path / "cache.sqlite"
    _run(_cfg(prompt, 1), cache, tmp_path / "fill", EXAMPLES[:200])
    shutil.copy(cache, tmp_path / "cache2.sqlite")
    alone, sent_alone = _run(_cfg(prompt, 1), cache, tmp_path / "alone")
    pooled, sent_pooled = _run(_cfg(prompt, 2), tmp_path / "cache2.sqlite", tmp_path / "pooled")

    records = (tmp_path / "alone/records.jsonl").read_bytes()
    assert records == (tmp_path / "pooled/records.jsonl").read_bytes()
    assert pooled == alone and sent_pooled == sent_alone
    steps = 2 if prompt == "zero_shot_cot" else 1
    assert pooled["written"] == 300 * SAMPLES and pooled["sent"] == 100 * SAMPLES * steps
    assert pooled["cache_hits"] == 200 * SAMPLES * steps
    assert 0 < pooled["truncated"] < pooled["written"]  # counted by the workers too
    assert 0 < pooled["correct"] < pooled["written"]


@pytest.fixture
def started(monkeypatch) -> list[_Worker]:
    """The cached-pass workers the test's runs start, in order."""
    workers: list[_Worker] = []

    class Recorded(_Worker):
        def __init__(self, init):
            super().__init__(init)
            workers.append(self)

    monkeypatch.setattr(cached_pass, "_Worker", Recorded)
    return workers


def test_workers_stop_with_a_run_that_stops_early(tmp_path, started):
    cache = tmp_path / "cache.sqlite"
    _run(_cfg("answer_conditioned", 1), cache, tmp_path / "fill", EXAMPLES[:150])
    summary, sent = _run(_cfg("answer_conditioned", 2, max_requests=5), cache, tmp_path / "run")
    assert summary["status"] == "max_requests" and sent == 5
    assert summary["written"] == 150 * SAMPLES + 5
    assert len(started) == 2 and all(w.proc.poll() is not None for w in started)


def test_a_worker_error_fails_the_run_with_its_message(tmp_path):
    Cache(tmp_path / "cache.sqlite").close()
    worker = _Worker(
        (_cfg("answer_conditioned", 2), "synthetic_arithmetic", str(tmp_path / "cache.sqlite"))
    )
    try:
        worker.send([("not an example", 0)])
        with pytest.raises(RuntimeError, match="cached-pass worker .*AttributeError"):
            worker.receive()
    finally:
        worker.end_input()
        worker.wait()
    assert worker.proc.returncode == 0


def test_a_worker_that_cannot_start_is_reported():
    worker = _Worker((_cfg("answer_conditioned", 2), "no_such_task_card", os.devnull))
    try:
        worker.send([])
        with pytest.raises(RuntimeError, match=r"cached-pass worker \d+ exited \(1\)"):
            worker.receive()
    finally:
        worker.end_input()
        worker.wait()


def test_pool_size(tmp_path):
    cfg = _cfg("zero_shot_cot", None)
    assert pool_size(cfg, POOL_MIN_JOBS - 1) == 1  # a small run: workers would cost more
    want = min(cached_pass.MAX_WORKERS, cached_pass.usable_cores())
    assert pool_size(cfg, POOL_MIN_JOBS) == want
    assert pool_size(replace(cfg, workers=3), POOL_MIN_JOBS - 1) == 3
    with pytest.raises(ValueError, match="--workers must be a number >= 1, got 0"):
        _cfg("zero_shot_cot", 0)


def _workers_of(marker: str) -> list[int]:
    """Live processes whose environment carries `marker` (this test's run and its workers)."""
    pids = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            env = Path(f"/proc/{pid}/environ").read_bytes()
            cmd = Path(f"/proc/{pid}/cmdline").read_bytes()
            state = Path(f"/proc/{pid}/stat").read_text().split(") ")[1][0]
        except OSError:
            continue
        if marker.encode() in env and b"worker_main" in cmd and state != "Z":
            pids.append(int(pid))
    return pids


def _cli_args(tmp_path: Path, examples, prompt: str) -> list[str]:
    """A CLI run over `examples` whose every request the cache holds (filled here)."""
    inp = tmp_path / "in.jsonl"
    inp.write_text("".join(ex.json_line() + "\n" for ex in examples))
    cache = tmp_path / "cache.sqlite"
    _run(_cfg(prompt, 1), cache, tmp_path / "fill", examples)
    args = [sys.executable, str(ROOT / "tools/query_teacher.py"), "run"]
    args += ["--task", "synthetic_arithmetic", "--input", str(inp), "--backend", "openai"]
    args += ["--base-url", "http://127.0.0.1:9/v1", "--model", "m", "--prompt", prompt]
    args += ["--samples", str(SAMPLES), "--temperature", "0.7", "--cache", str(cache)]
    return args + ["--out", str(tmp_path / "run"), "--workers", "2", "--no-progress"]


def test_sigterm_to_the_process_group_stops_the_run_cleanly(tmp_path):
    """A scheduler's SIGTERM reaches the run and its workers: the run stops as interrupted
    (exit 130), not as an error because its workers died."""
    examples = generate("arithmetic", "train", n=6000, difficulty=2)
    args = _cli_args(tmp_path, examples, "answer_conditioned")
    marker = f"SCICOT_TEST_RUN={tmp_path}"
    env = {**os.environ, "SCICOT_TEST_RUN": str(tmp_path)}
    proc = subprocess.Popen(
        args,
        env=env,
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )
    deadline = time.monotonic() + 60
    while len(_workers_of(marker)) < 2 and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    os.killpg(proc.pid, signal.SIGTERM)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err.decode()[-2000:]
    summary = json.loads(out)
    assert summary["status"] == "interrupted" and summary["written"] < 6000 * SAMPLES


def test_kill_9_of_the_run_leaves_no_worker_and_a_rerun_completes(tmp_path):
    args = _cli_args(tmp_path, EXAMPLES, "zero_shot_cot")
    marker = f"SCICOT_TEST_RUN={tmp_path}"
    env = {**os.environ, "SCICOT_TEST_RUN": str(tmp_path), CRASH_ENV: "records"}
    killed = subprocess.run(args, env=env, capture_output=True, cwd=ROOT, timeout=120)
    assert killed.returncode == -signal.SIGKILL, killed.stderr.decode()[-2000:]
    deadline = time.monotonic() + 20
    while _workers_of(marker) and time.monotonic() < deadline:  # their input ended: they go
        time.sleep(0.1)
    assert not _workers_of(marker)

    env.pop(CRASH_ENV)
    done = subprocess.run(args, env=env, capture_output=True, cwd=ROOT, timeout=120)
    assert done.returncode == 0, done.stderr.decode()[-2000:]
    summary = json.loads(done.stdout)
    assert summary["sent"] == 0 and summary["records"] == 300 * SAMPLES
    # The same records (the filling run wrote them in completion order, the pass in input order).
    want = sorted((tmp_path / "fill/records.jsonl").read_bytes().splitlines())
    assert sorted((tmp_path / "run/records.jsonl").read_bytes().splitlines()) == want


def test_answers_left_unread_do_not_hold_the_workers(tmp_path, started):
    cache = tmp_path / "cache.sqlite"
    _run(_cfg("answer_conditioned", 1), cache, tmp_path / "fill")  # every job cached
    requests = JobRequests(_cfg("answer_conditioned", 2), load_card("synthetic_arithmetic"))
    jobs = [(ex, k) for ex in EXAMPLES for k in range(SAMPLES)]
    chunks = [jobs[i : i + 512] for i in range(0, len(jobs), 512)]
    with (
        Cache(cache, readonly=True) as read,
        cached_pass.answered_chunks(CacheReader(requests, read), chunks, 2) as answered,
    ):
        _, first = next(answered)
        assert len(first.entries) == 512
        time.sleep(1)  # the second worker's answer (~90 KB) now fills its pipe, unread
        t = time.monotonic()
    assert time.monotonic() - t < 5
    assert [w.proc.returncode for w in started] == [0, 0]  # exited, not killed


@pytest.mark.parametrize("workers", [1, 2])
def test_ctrl_c_stops_a_long_cached_pass_within_a_chunk(tmp_path, monkeypatch, workers):
    monkeypatch.setattr(runner, "CHUNK", 64)
    cache = tmp_path / "cache.sqlite"
    _run(_cfg("answer_conditioned", 1), cache, tmp_path / "fill")  # every job cached
    passes = []

    def source():  # the run reads it twice: the scan, then the jobs; Ctrl-C in the second
        passes.append(1)
        for i, ex in enumerate(EXAMPLES):
            if len(passes) == 2 and i == 40:
                os.kill(os.getpid(), signal.SIGINT)
            yield ex

    run = TeacherRun(
        _cfg("answer_conditioned", workers),
        "synthetic_arithmetic",
        source,
        cache,
        tmp_path / "run",
        backend=Deterministic(),
    )
    summary = asyncio.run(run.run())
    assert summary["status"] == "interrupted"
    # Chunks of 16 examples; the workers hold up to 4 chunks ahead of the one being written.
    assert 0 < summary["written"] <= 48 * SAMPLES + 6 * 64, summary["written"]
    assert summary["records"] == summary["written"]
