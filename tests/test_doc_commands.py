"""Every ```bash block of README.md and docs/*.md runs as written, or says why not.

A block right after `<!-- not-run: REASON -->` is not run here (too long, needs a bucket, a key
or data this machine lacks; the reason names what tests the same path instead); the README's
Cloud TPU block is run by tests/test_readme_tpu.py against a GCS server. Every other block runs
in bash from the repository root, with `/tmp/` paths moved into the test's directory.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
BLOCK = re.compile(r"(?:^(<!--[^\n]*-->)\n)?^```bash\n(.*?)^```$", re.M | re.S)


def blocks() -> list[tuple[str, str, str]]:
    """(file:line, marker or "", commands) of every bash block."""
    out = []
    for doc in DOCS:
        text = doc.read_text()
        for m in BLOCK.finditer(text):
            line = text[: m.start(2)].count("\n")
            out.append((f"{doc.relative_to(ROOT)}:{line}", m.group(1) or "", m.group(2)))
    return out


def _runnable() -> list[tuple[str, str]]:
    return [(where, cmds) for where, marker, cmds in blocks() if not marker]


def test_every_block_runs_or_says_why_not():
    assert len(blocks()) >= 10
    for where, marker, _ in blocks():
        if marker.startswith("<!-- cloud-tpu-commands"):
            assert "tests/test_readme_tpu.py" in marker, where
        elif marker:
            reason = re.fullmatch(r"<!-- not-run: (.{12,}) -->", marker)
            assert reason, f"{where}: a marker must be `<!-- not-run: REASON -->`, got {marker}"
    assert len(_runnable()) >= 2  # the CPU quick start and the offline teacher tool


@pytest.mark.slow  # trains, evaluates and samples a tiny T5; runs the teacher tool: minutes
@pytest.mark.parametrize("where,cmds", _runnable(), ids=[w for w, _ in _runnable()])
def test_block_runs_as_written(where, cmds, tmp_path):
    script = cmds.replace("/tmp/", f"{tmp_path}/")
    env = {
        **os.environ,
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
        "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
    }
    p = subprocess.run(
        ["bash", "-euo", "pipefail", "-c", script],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=1800,  # CPU: ~2 min of work; the shared machine can stretch it tenfold
    )
    assert p.returncode == 0, f"{where}:\n{p.stdout[-3000:]}\n{p.stderr[-3000:]}"
