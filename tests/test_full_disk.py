"""A full disk under the teacher's cache, the rationale store and MODEL_DIR: exit 2 and one
line naming the path and "no space left", no traceback (a real ENOSPC: see full_disk.py)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from full_disk import available, full_disk_cmd
from test_binaries import ROOT
from test_binary_errors import TINY

pytestmark = pytest.mark.skipif(not available(), reason="no tmpfs in a user namespace here")


def _one_line_error(r: subprocess.CompletedProcess, prog: str, code: int, *words: str) -> str:
    assert r.returncode == code, (r.returncode, r.stderr[-3000:])
    assert "Traceback" not in r.stderr, r.stderr[-3000:]
    errors = [x for x in r.stderr.splitlines() if x.startswith(f"{prog}: error:")]
    assert len(errors) == 1, r.stderr[-3000:]
    for w in words:
        assert w in errors[0], errors[0]
    return errors[0]


@pytest.mark.slow  # a train binary: compiles the tiny model (~1-2 min on 2 busy cores)
def test_train_model_dir_on_a_full_disk(tmp_path, tiny_vocab_path):
    disk = tmp_path / "disk"
    cmd = [
        sys.executable,
        "-m",
        "scicot_jax.train",
        *TINY,
        f"--gin.MODEL_DIR={disk / 'model'}",
        "--gin.MIXTURE_OR_TASK_NAME=scicot:synthetic_coin_flip:baseline",
    ]
    r = subprocess.run(
        full_disk_cmd(disk, "200k", cmd),
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
        env=dict(os.environ, JAX_PLATFORMS="cpu"),
    )
    _one_line_error(r, "scicot-train", 2, "no space left on device", str(disk / "model"))
    assert "Event loop is closed" not in r.stderr
    assert len(r.stderr.splitlines()) < 40, r.stderr  # log lines, not tracebacks


@pytest.mark.parametrize(
    ("where", "size"),
    [("cache", "40k"), ("cache", "300k"), ("store", "8k"), ("store", "200k")],
)  # the small disks fill while opening, the larger ones part-way through the run
def test_teacher_cache_or_store_on_a_full_disk(tmp_path, where, size):
    from test_teacher_cli import _input

    from scicot_jax.teacher.fakes.oracle_server import start_oracle_server

    disk = tmp_path / "disk"
    cache = (disk if where == "cache" else tmp_path) / "c.sqlite"
    out = (disk if where == "store" else tmp_path) / "run"
    srv = start_oracle_server()
    try:
        args = [
            *("run", "--task", "synthetic_mc", "--input", str(_input(tmp_path, n=300))),
            *("--backend", "openai", "--base-url", srv.url, "--model", "oracle"),
            *("--prompt", "zero_shot_cot", "--samples", "2", "--temperature", "0.7"),
            *("--cache", str(cache), "--out", str(out), "--no-progress"),
        ]
        r = subprocess.run(
            full_disk_cmd(disk, size, [sys.executable, "tools/query_teacher.py", *args]),
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=300,
            env=dict(os.environ, OPENAI_API_KEY="x"),
        )
    finally:
        srv.close()
    _one_line_error(r, "scicot-teacher", 2, "no space left on device", str(disk))
