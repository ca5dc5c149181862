"""The README's Cloud TPU commands, run as written against a GCS-protocol server: a tiny model
stands in for Flan-T5-small (its t5x checkpoint written where the public one lives,
gs://t5-data/...), the demo vocabulary for T5's, a synthetic task for ARC-Easy, the oracle
(speaking Gemini's protocol) for Gemini, and a few size flags are appended."""

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
        m = re.fullmatch(r"([A-Z_][A-Z0-9_]*)=(\S+)\s*", current)
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


def _pipeline_tiny(argv: list[str], oracle_url: str) -> list[str]:
    """The README's pipeline command with the tiny model, a synthetic card, the oracle speaking
    Gemini's protocol as the teacher, and test sizes (flags given last win)."""
    swap = {"arc_easy": "synthetic_mc", "small": "tiny"}
    out, skip = [], False
    for a in argv:
        if skip:
            skip = False
        elif a == "--data_dir":  # the synthetic card reads no files
            skip = True
        else:
            out.append(swap.get(a, a))
    model = [f"--student.overrides={k}={v}" for k, v in TINY.items() if k != "VOCAB_SIZE"]
    return out + model + [
        f"--student.overrides=vocab_size={TINY['VOCAB_SIZE']}", "--teacher.base_url", oracle_url,
        "--methods", "scicot:1", "--limits", "train=8", "--limits", "validation=4",
        "--limits", "test=4", "--student.steps", "2", "--student.stage2_steps", "2",
        "--student.batch_size", "4",
    ]  # fmt: skip


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
    tmp_path, tiny_vocab_path, _local_compile_cache_after, monkeypatch
):
    from gcs_emulator import gcs_emulator

    from scicot_jax import eval as eval_bin
    from scicot_jax import infer, train
    from scicot_jax.checkpoints import t5x
    from scicot_jax.pipeline import cli as pipeline_cli
    from scicot_jax.teacher import start_oracle_server

    sys.path.insert(0, str(ROOT / "tools"))
    import convert_checkpoint

    enable_compile_cache(tmp_path / "jax_cache")
    env, commands = readme_commands()
    assert [c[:3] for c in commands] == [
        ["python", "tools/run_pipeline.py", "run"],
        ["python", "tools/convert_checkpoint.py", "orbax-to-t5x"],
        ["python", "-m", "scicot_jax.train"],
        ["python", "-m", "scicot_jax.eval"],
        ["python", "-m", "scicot_jax.infer"],
        ["python", "tools/convert_checkpoint.py", "orbax-to-t5x"],
    ]
    assert "--preset" in commands[0] and commands[0][commands[0].index("--preset") + 1] == "scicot"
    flan = env["FLAN"]
    public_bucket = flan[len("gs://") :].split("/")[0]
    monkeypatch.setenv("GEMINI_API_KEY", "test-key")  # the README's environment
    oracle = start_oracle_server(log_requests=False)
    with gcs_emulator(env["BUCKET"]) as bucket:
        import gcsfs

        gcsfs.GCSFileSystem(token="anon").mkdir(public_bucket)
        pretrained = _flan_t5x_stand_in(flan)
        as_path(env["T5_VOCAB"]).write_bytes(Path(tiny_vocab_path).read_bytes())
        start = int(flan.rsplit("_", 1)[1])

        # Sci-CoT with the preset: Stage 1, the Stage-1 student's rationales, Stage 2, eval
        res = pipeline_cli.main(_pipeline_tiny(commands[0][2:], oracle.url))
        oracle.close()
        run = as_path(f"{bucket}/runs/arc_easy_scicot")
        m = res["methods"]["scicot:1"]
        assert res["config"]["preset"] == "scicot" and res["config"]["budget"]["match"] == "none"
        assert (m["stages"]["student"]["steps"], m["stages"]["stage2"]["steps"]) == (2, 2)
        assert set(m["stage1_rationale_answer_accuracy"]) == {"train", "validation", "test"}
        for step in ("teacher_answer_conditioned", "stage1_scicot_d1", "rationales_scicot_d1"):
            assert (run / step / "DONE.json").exists(), step  # pushed to the bucket
        assert (run / "stage2_scicot_d1" / "config.gin").exists()  # the gin trainer ran it
        assert "the scicot paper's recipe" in (run / "results.md").read_text()
        assert convert_checkpoint.main(commands[1][2:]) == 0
        stage2 = t5x.read(f"{bucket}/arc_easy_scicot_t5x")
        assert stage2.step == 2  # the pipeline's stages count their steps from 0

        model_dir = as_path(f"{bucket}/arc_easy")

        train_argv = _tiny(commands[2][3:]) + [
            f"--gin.TRAIN_STEPS={start + 2}",  # the README's TRAIN_STEPS minus 1,998 steps
            "--gin.EVAL_PERIOD=0",
            "--gin.CHECKPOINT_PERIOD=2",
        ]
        result = train.main(["train", *train_argv])
        assert result.step == start + 2 and not result.preempted  # 2 steps from step 1198000
        assert (model_dir / "checkpoints" / str(start + 2) / "params").is_dir()
        assert "T5Config.d_model = 16" in (model_dir / "config.gin").read_text()
        assert any(as_path(f"{bucket}/xla_cache").iterdir())  # the compiled step, on gs://

        res = eval_bin.main(["eval", *_tiny(commands[3][3:]), "--gin.evaluate.limit=4"])
        assert list(res) == [start + 2]
        evals = {p.name for p in (model_dir / "inference_eval").iterdir()}
        assert f"{TASK}-{start + 2:06}.jsonl" in evals and f"{TASK}-metrics.jsonl" in evals, evals

        infer.main(["infer", *_tiny(commands[4][3:]), "--gin.infer.limit=3"])
        (pred,) = list((model_dir / "infer").iterdir())
        assert pred.name.endswith("-predict.jsonl-00000-of-00001")
        assert len(pred.read_text().splitlines()) == 3

        assert convert_checkpoint.main(commands[5][2:]) == 0
        exported = t5x.read(f"{bucket}/arc_easy_t5x")
        assert exported.step == start + 2 and exported.param_states is not None
        moved = jax.tree.leaves(jax.tree.map(np.array_equal, exported.params, pretrained))
        assert not all(moved)  # trained params, not the initial ones
    # the README's --compilation_cache_dir gs://... under a cache size limit (the tests set one)
    assert not Path("gs:").exists()  # nothing leaked into ./gs:/...
