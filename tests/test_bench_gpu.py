"""bench/gpu.py runs end to end, shrunken, on CPU: one JSON, no TensorFlow or seqio imported."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
RUN = """
import runpy, sys
sys.argv = ["bench/gpu.py", "--shrink", "--repeats=1", "--out", sys.argv[1]]
runpy.run_path("bench/gpu.py", run_name="__main__")
heavy = sorted(m for m in ("tensorflow", "seqio") if m in sys.modules)
assert not heavy, f"bench/gpu.py imported {heavy}"
"""


@pytest.mark.slow
def test_shrunken_gpu_bench_writes_one_json(tmp_path):
    out = tmp_path / "bench_gpu.json"
    r = subprocess.run(
        [sys.executable, "-c", RUN, str(out)], cwd=ROOT, capture_output=True, text=True,
        timeout=600, env={**os.environ, "JAX_PLATFORMS": "cpu"},
    )  # fmt: skip
    assert r.returncode == 0, r.stderr[-3000:]
    res = json.loads(out.read_text())
    assert res["shrunk"] and res["backend"] == "cpu"
    train = res["train"]["tiny"]
    for system in ("ours", "hf_eager"):
        assert train["results"][system]["tokens_per_s"] > 0
        assert 0 < train["results"][system]["mfu"] < 1
    assert train["ratios"]["ours/hf_eager"] > 0
    decode = res["decode"]["tiny"]
    assert decode["tokens_per_s"]["ours"] > 0 and decode["ratio_to_hf_generate"] > 0
    assert res["wall_s"]["total"] > 0
