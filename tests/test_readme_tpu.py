"""The README's Cloud TPU commands, run as written against a GCS-protocol server: a tiny model
stands in for Flan-T5-small (its t5x checkpoint written where the public one lives,
gs://t5-data/...), a synthetic task for ARC-Easy, and a few size flags are appended."""

from __future__ import annotations

import re
import shlex
import sys
from pathlib import Path

import jax
import numpy as np
import pytest
from model_fixtures import enable_compile_cache
from t5x_layout import t5x_adafactor_states, write_legacy_t5x

from scicot_jax.paths import as_path

ROOT = Path(__file__).resolve().parents[1]
TASK = "scicot:synthetic_coin_flip:baseline"
TINY = dict(
    VOCAB_SIZE=512, d_model=16, num_heads=2, d_kv=8, d_ff=32, num_encoder_layers=1,
    num_decoder_layers=1,
)  # fmt: skip
SIZE_FLAGS = [
    "--gin.TASK_FEATURE_LENGTHS={'inputs': 64, 'targets': 8}",
    "--gin.BATCH_SIZE=4",
]


def readme_commands() -> tuple[dict[str, str], list[list[str]]]:
    """(shell variables, commands as argv) of the README block marked `cloud-tpu-commands`."""
    text = (ROOT / "README.md").read_text()
    block = text.split("<!-- cloud-tpu-commands", 1)[1].split("```bash\n", 1)[1].split("```")[0]
    env: dict[str, str] = {}
    commands, current = [], ""
    for line in block.splitlines():
        if line.startswith("#") or not line.strip():
            continue
        current += line.rstrip("\\").rstrip() + " "
        if line.endswith("\\"):
            continue
        m = re.fullmatch(r"([A-Z_]+)=(\S+)\s*", current)
        if m:
            env[m.group(1)] = m.group(2)
        else:
            commands.append(current)
        current = ""
    expand = lambda s: re.sub(r"\$(\w+)", lambda v: env[v.group(1)], s)  # noqa: E731
    env = {k: expand(v) for k, v in env.items()}
    return env, [shlex.split(expand(c)) for c in commands]


def _tiny(argv: list[str]) -> list[str]:
    """The README command with the tiny model, the synthetic task and test sizes."""
    out = []
    for a in argv:
        if a == "--gin_file=models/small.gin":
            out += ["--gin_file=models/tiny.gin", f"--gin.VOCAB_SIZE={TINY['VOCAB_SIZE']}"]
            out += [f"--gin.T5Config.{k}={v}" for k, v in TINY.items() if k != "VOCAB_SIZE"]
        elif a.startswith("--gin.MIXTURE_OR_TASK_NAME="):
            out.append(f"--gin.MIXTURE_OR_TASK_NAME='{TASK}'")
        else:
            out.append(a)
    return out + SIZE_FLAGS


def _flan_t5x_stand_in(url: str) -> dict:
    """A tiny T5 written as t5x's legacy checkpoint at `url` (step 1198000, Adafactor state)."""
    from scicot_jax.model import T5Config, init_params

    config = T5Config.preset(
        "tiny",
        vocab_size=TINY["VOCAB_SIZE"],
        **{k: v for k, v in TINY.items() if k != "VOCAB_SIZE"},
    )
    params = jax.tree.map(np.asarray, init_params(config, jax.random.key(3)))
    states = t5x_adafactor_states(params, min_dim=128)
    step = int(url.rsplit("_", 1)[1])
    write_legacy_t5x(
        url, {"target": params, "state": {"step": np.int32(step), "param_states": states}}, gcs=True
    )
    return params


@pytest.fixture
def _local_compile_cache_after(tmp_path):
    """The train command points JAX's cache at gs://; later tests must not write to a server
    that is gone."""
    yield
    from jax.experimental.compilation_cache import compilation_cache

    enable_compile_cache(tmp_path / "jax_cache_after")
    compilation_cache.reset_cache()


@pytest.mark.slow
def test_readme_cloud_tpu_commands_run_against_gcs(
    tmp_path, tiny_vocab_path, _local_compile_cache_after
):
    from gcs_emulator import gcs_emulator

    from scicot_jax import eval as eval_bin
    from scicot_jax import infer, train
    from scicot_jax.runtime import t5x_checkpoints

    sys.path.insert(0, str(ROOT / "tools"))
    import convert_checkpoint

    enable_compile_cache(tmp_path / "jax_cache")
    env, commands = readme_commands()
    assert [c[:3] for c in commands] == [
        ["python", "-m", "scicot_jax.train"],
        ["python", "-m", "scicot_jax.eval"],
        ["python", "-m", "scicot_jax.infer"],
        ["python", "tools/convert_checkpoint.py", "orbax-to-t5x"],
    ]
    flan = env["FLAN"]
    public_bucket = flan[len("gs://") :].split("/")[0]
    with gcs_emulator(env["BUCKET"]) as bucket:
        import gcsfs

        gcsfs.GCSFileSystem(token="anon").mkdir(public_bucket)
        pretrained = _flan_t5x_stand_in(flan)
        start = int(flan.rsplit("_", 1)[1])
        model_dir = as_path(f"{bucket}/arc_easy")

        train_argv = _tiny(commands[0][3:]) + [
            f"--gin.TRAIN_STEPS={start + 2}",  # the README's TRAIN_STEPS minus 1,998 steps
            "--gin.EVAL_PERIOD=0",
            "--gin.CHECKPOINT_PERIOD=2",
        ]
        result = train.main(["train", *train_argv])
        assert result.step == start + 2 and not result.preempted  # 2 steps from step 1198000
        assert (model_dir / "checkpoints" / str(start + 2) / "params").is_dir()
        assert "T5Config.d_model = 16" in (model_dir / "config.gin").read_text()
        assert any(as_path(f"{bucket}/xla_cache").iterdir())  # the compiled step, on gs://

        res = eval_bin.main(["eval", *_tiny(commands[1][3:]), "--gin.evaluate.limit=4"])
        assert list(res) == [start + 2]
        evals = {p.name for p in (model_dir / "inference_eval").iterdir()}
        assert f"{TASK}-{start + 2:06}.jsonl" in evals and f"{TASK}-metrics.jsonl" in evals, evals

        infer.main(["infer", *_tiny(commands[2][3:]), "--gin.infer.limit=3"])
        (pred,) = list((model_dir / "infer").iterdir())
        assert pred.name.endswith("-predict.jsonl-00000-of-00001")
        assert len(pred.read_text().splitlines()) == 3

        assert convert_checkpoint.main(commands[3][2:]) == 0
        exported = t5x_checkpoints.read(f"{bucket}/arc_easy_t5x")
        assert exported.step == start + 2 and exported.param_states is not None
        moved = jax.tree.leaves(jax.tree.map(np.array_equal, exported.params, pretrained))
        assert not all(moved)  # trained params, not the initial ones
    # the README's --compilation_cache_dir gs://... under a cache size limit (the tests set one)
    assert not Path("gs:").exists()  # nothing leaked into ./gs:/...
