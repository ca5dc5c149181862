"""The built wheel works installed, away from the checkout: gin files and task cards come from
<prefix>/share/scicot_jax, the train binary trains with --gin_file=models/tiny.gin, and the
pipeline demo's first step (its data) runs."""

from __future__ import annotations

import os
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _sh(*cmd: str, cwd: Path, env: dict | None = None, timeout: int = 600) -> str:
    p = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert p.returncode == 0, f"{cmd}:\n{p.stdout[-2000:]}\n{p.stderr[-3000:]}"
    return p.stdout + p.stderr


@pytest.mark.slow  # builds a wheel, makes a venv, trains 2 steps: a minute or more
def test_wheel_installed_outside_the_checkout_trains_and_runs_the_demo_data_step(tmp_path):
    dist, venv, work = tmp_path / "dist", tmp_path / "venv", tmp_path / "elsewhere"
    build = tmp_path / "src"  # a copy: building writes build/ and *.egg-info beside setup.py
    files = _sh("git", "ls-files", "--cached", "--others", "--exclude-standard", cwd=ROOT)
    for rel in files.split():
        if (ROOT / rel).is_file():
            (build / rel).parent.mkdir(parents=True, exist_ok=True)
            (build / rel).write_bytes((ROOT / rel).read_bytes())
    py = sys.executable
    _sh(
        py,
        "-m",
        "pip",
        "wheel",
        "--no-deps",
        "--no-build-isolation",
        "-q",
        "-w",
        str(dist),
        ".",
        cwd=build,
    )
    wheel = next(dist.glob("scicot_jax-*.whl"))
    _sh(py, "-m", "venv", "--without-pip", str(venv), cwd=tmp_path)
    vpy = venv / "bin" / "python"
    site = Path(
        _sh(
            str(vpy),
            "-c",
            "import sysconfig; print(sysconfig.get_paths()['purelib'])",
            cwd=tmp_path,
        ).strip()
    )
    # The dependencies this interpreter has, as a plain path (not its .pth files: an editable
    # install there would shadow the wheel).
    (site / "deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    # Without PYTHONPATH: a checkout on it (with its *.egg-info) reads as the wheel already
    # installed, and pip would install nothing.
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    _sh(
        py,
        "-m",
        "pip",
        "--python",
        str(vpy),
        "install",
        "--no-deps",
        "-q",
        str(wheel),
        cwd=tmp_path,
        env=env,
    )
    work.mkdir()
    where = _sh(
        str(vpy),
        "-c",
        "import scicot_jax, scicot_jax.runtime.gin_utils as g; "
        "print(scicot_jax.__file__); print(g.GIN_DIR)",
        cwd=work,
        env=env,
    ).split()
    assert where[0].startswith(str(venv)) and where[1] == str(venv / "share/scicot_jax/gin")
    out = _sh(
        str(venv / "bin" / "scicot-train"),
        "--gin_file=models/tiny.gin",
        "--gin_file=runs/finetune.gin",
        f"--gin.MODEL_DIR='{work / 'model'}'",
        "--gin.MIXTURE_OR_TASK_NAME='scicot:synthetic_coin_flip:baseline'",
        "--gin.TASK_FEATURE_LENGTHS={'inputs': 64, 'targets': 8}",
        "--gin.BATCH_SIZE=4",
        "--gin.TRAIN_STEPS=2",
        "--gin.EVAL_PERIOD=0",
        "--gin.CHECKPOINT_PERIOD=2",
        cwd=work,
        env=env,
    )
    assert (work / "model" / "config.gin").exists(), out[-2000:]
    assert (work / "model" / "checkpoints" / "2").is_dir(), out[-2000:]
    _sh(
        str(vpy),
        "-c",
        "import sys; from scicot_jax.pipeline.demo import demo_config; "
        "from scicot_jax.pipeline.run import Pipeline; "
        "p = Pipeline(demo_config(sys.argv[1]), student=None); p._data()",
        str(work / "demo"),
        cwd=work,
        env=env,
    )
    assert {"train.jsonl", "test.jsonl"} <= {f.name for f in (work / "demo" / "data").iterdir()}
