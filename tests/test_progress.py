"""Progress lines: in place on a terminal, periodic plain lines otherwise; shown by training
(step, loss, tokens/s, ETA) and by batched inference (batches, rows/s, ETA)."""

from __future__ import annotations

import io
import re
from pathlib import Path

import numpy as np
from train_toy import toy_batches, toy_spec

from scicot_jax.progress import StepProgress
from scicot_jax.runtime.inference import Batch, run_pipelined
from scicot_jax.teacher.progress import Progress, Stats
from scicot_jax.train.configs import CheckpointConfig
from scicot_jax.train.trainer import TrainConfig, train


class Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_plain_stream_gets_whole_lines_and_the_last_one_always():
    out = io.StringIO()
    bar = StepProgress("train", 4, stream=out, interval=3600)
    for step in range(1, 5):
        bar.advance(step, 100, loss=2.0 / step)
    lines = out.getvalue().splitlines()
    assert len(lines) == 2 and "\r" not in out.getvalue()  # the first step, then the end
    assert re.fullmatch(
        r"\[train\] step 4/4 100\.0% \| loss 0\.5 \| \S+ tok/s \| ETA 0m00s", lines[-1]
    )


def test_terminal_redraws_in_place():
    out = Tty()
    bar = StepProgress("predict", 3, unit="rows", stream=out, interval=0)
    bar.advance(1, 8)
    assert out.getvalue().startswith(
        "\x1b[2K[predict] step 1/3  33.3%"
    ) and out.getvalue().endswith("\r")
    bar.advance(3, 8)
    assert re.search(
        r"\r\x1b\[2K\[predict\] step 3/3 100\.0% \| \S+ rows/s \| ETA 0m00s\n$", out.getvalue()
    )


def test_teacher_progress_is_the_same_renderer():
    out = io.StringIO()
    Progress(Stats(jobs_total=4), stream=out).maybe_render(force=True)
    assert out.getvalue().startswith("[teacher] 0/4") and out.getvalue().endswith("\n")


def test_training_shows_step_loss_rate_and_eta(tmp_path: Path, capsys):
    cfg = TrainConfig(
        model_dir=str(tmp_path),
        train_steps=3,
        feature_lengths={"inputs": 6, "targets": 5},
        checkpoint=CheckpointConfig(async_save=False),
        handle_sigterm=False,
    )
    train(cfg, toy_batches(), model_spec=toy_spec())
    last = capsys.readouterr().err.strip().splitlines()[-1]
    assert re.fullmatch(
        r"\[train\] step 3/3 100\.0% \| loss/token [\d.]+ \| \S+ tok/s \| ETA 0m00s", last
    )


def test_inference_shows_batches_and_rows(capsys):
    batches = [Batch((0, 1), 2, (8,)), Batch((2, 2), 1, (8,))]
    out = run_pipelined(
        batches,
        lambda k, b: np.asarray(b.rows),
        lambda b, host: [int(x) * 10 for x in host[: b.size]],
        progress="predict stage1",
    )
    assert out == [0, 10, 20]
    last = capsys.readouterr().err.strip().splitlines()[-1]
    assert last.startswith("[predict stage1] step 2/2 100.0% |") and " rows/s | " in last
