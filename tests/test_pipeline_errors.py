"""run_pipeline.py's expected failures: one stderr line, exit 2, nothing created."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _pipeline(*args: str, **kw) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(ROOT / "tools/run_pipeline.py"), *args],
        capture_output=True,
        text=True,
        timeout=300,
        env=dict(os.environ, JAX_PLATFORMS="cpu"),
        **kw,
    )


def _one_line(r: subprocess.CompletedProcess, *words: str) -> str:
    assert r.returncode == 2, (r.returncode, r.stderr[-3000:])
    assert "Traceback" not in r.stderr, r.stderr[-3000:]
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("run_pipeline.py: error: "), r.stderr[-3000:]
    for w in words:
        assert w in lines[0], lines[0]
    return lines[0]


@pytest.mark.parametrize(
    ("flags", "words"),
    [
        (["--methods", "finetune_cot4"], ["unknown method 'finetune_cot4'", "'finetune_cot:4'"]),
        (["--task", "synthetic_mcq"], ["no task card named 'synthetic_mcq'"]),
        (["--batch-size", "8"], ["unrecognized arguments: --batch-size", "--student.batch_size"]),
    ],
)
def test_bad_flag_is_one_line_and_out_is_not_created(tmp_path, flags, words):
    out = tmp_path / "run"
    base = {"--task": "synthetic_mc", "--methods": "baseline"}
    base.update(dict(zip(flags[::2], flags[1::2], strict=True)))
    r = _pipeline("run", "--out", str(out), *sum(base.items(), ()))
    _one_line(r, *words)
    assert not out.exists()


def test_accuracy_on_a_damaged_predictions_file_names_file_and_line(tmp_path):
    row = {"id": "1", "split": "test", "input": "q", "output": "A", "parsed": "A", "gold": "A"}
    path = tmp_path / "predictions_test.jsonl"
    good = json.dumps({**row, "correct": True})
    path.write_text(good + "\n" + good[:25])  # cut mid-line, as a full disk leaves it
    _one_line(_pipeline("accuracy", str(path)), f"{path}:2")
