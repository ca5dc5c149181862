"""`scicot-teacher report | head`: a reader that stops early is not an error."""

from __future__ import annotations

import subprocess
import sys

from test_teacher_cli import ROOT, _run_args

from scicot_jax.teacher.cli import main
from scicot_jax.teacher.fakes.oracle_server import start_oracle_server


def test_report_into_a_closed_pipe_is_quiet(tmp_path, monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "x")
    srv = start_oracle_server()
    try:
        assert main(_run_args(srv, tmp_path)) == 0
    finally:
        srv.close()
    p = subprocess.Popen(
        [sys.executable, str(ROOT / "tools/query_teacher.py"), "report", str(tmp_path / "run")],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    p.stdout.close()  # the reader is gone before the report is written (as `| head` ends)
    err = p.stderr.read().decode()
    assert p.wait(timeout=120) == 0, err
    assert err == "", err
