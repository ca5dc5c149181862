"""Replay of Fine-tune-CoT's recorded text-davinci-002 completions: the paper's SVAMP 64.20."""

from __future__ import annotations

import json

from scicot_jax.teacher import start_replay_server
from scicot_jax.teacher.cli import main


def test_replay_reproduces_svamp_teacher_accuracy(tmp_path, capsys, shared_data):
    data = shared_data / "finetune_cot"
    srv = start_replay_server(data)
    correct = records = 0
    try:
        for split in ("train", "test"):  # the paper's figure is over all samples
            out = tmp_path / split
            code = main(
                [
                    "run",
                    "--task",
                    "ftcot_svamp",
                    "--split",
                    split,
                    "--backend",
                    "openai",
                    "--api",
                    "completions",
                    "--base-url",
                    srv.url,
                    "--model",
                    "text-davinci-002",
                    "--prompt",
                    "zero_shot_cot",
                    "--samples",
                    "1",
                    "--temperature",
                    "0",
                    "--max-tokens",
                    "128",
                    "--answer-max-tokens",
                    "128",
                    "--cache",
                    str(tmp_path / "c.sqlite"),
                    "--out",
                    str(out),
                    "--concurrency",
                    "16",
                    "--no-progress",
                ]
            )
            assert code == 0, capsys.readouterr().err
            capsys.readouterr()
            assert main(["report", str(out)]) == 0
            rep = json.loads(capsys.readouterr().out)
            assert rep["requests"]["failed"] == 0  # every prompt matched a recording exactly
            correct += rep["correct"]
            records += rep["records"]
    finally:
        srv.close()
    assert records == 1000
    assert round(100 * correct / records, 2) == 64.20
