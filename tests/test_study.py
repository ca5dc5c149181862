"""Scaling study: plan expansion, launch lines, local runner, collection and rendering."""

import json
import shlex

from scicot_jax.pipeline import study
from scicot_jax.pipeline.study_cli import main


def test_plan_expands_axes():
    runs = study.plan(["baseline", "finetune_cot", "scicot+morsd"], [1, 4], [0.5, 1.0], ["tiny"])
    names = [r.name for r in runs]
    assert len(runs) == 2 * (1 + 2 + 2)
    assert "baseline_d0_f0p5_tiny" in names and "scicot-morsd_d4_f1_tiny" in names
    r = next(r for r in runs if r.name == "finetune_cot_d4_f0p5_tiny")
    assert r.argv("o") == [
        "--methods",
        "finetune_cot:4",
        "--train-fraction",
        "0.5",
        "--student",
        "tiny",
        "--out",
        "o",
    ]


def test_commands_local_and_tpu(tmp_path):
    runs = study.plan(["scicot"], [2], [1.0], ["small"])
    base = ["--task", "arc_easy", "--gin", "BATCH_SIZE=128"]
    (local,) = study.commands(runs, tmp_path, base)
    argv = shlex.split(local)
    assert argv[:3] == ["python", "tools/run_pipeline.py", "run"]
    assert "BATCH_SIZE=128" in argv and argv[-1].endswith("runs/scicot_d2_f1_small")
    tpu = study.TpuTarget("v4-32", "us-central2-b", "proj", gcs_dir="gs://b/study")
    (line,) = study.commands(runs, "/tmp/study", base, tpu=tpu)
    argv = shlex.split(line)
    assert argv[:6] == ["gcloud", "compute", "tpus", "tpu-vm", "ssh", "v4-32"]
    assert "--worker=all" in argv and "--project=proj" in argv
    inner = argv[-1].removeprefix("--command=")
    assert inner.startswith("cd ~/scicot_jax && python3 tools/run_pipeline.py run --task arc_easy")
    assert "gsutil -m rsync -r /tmp/study/runs/scicot_d2_f1_small gs://b/study/runs/" in inner


def _fake_pipeline(argv):
    """Stands in for the pipeline: writes a results.json whose accuracy grows with D."""
    out = argv[argv.index("--out") + 1]
    spec = argv[argv.index("--methods") + 1]
    method, _, d = spec.partition(":")
    if method == "scicot" and d == "2":
        raise RuntimeError("simulated failure")
    d = int(d or 0)
    res = {
        "config": {
            "train_fraction": float(argv[argv.index("--train-fraction") + 1]),
            "student": argv[argv.index("--student") + 1],
        },
        "methods": {
            spec: {
                "method": method,
                "selection": "none",
                "degree": d,
                "rationales_used": 10 * d,
                "train_examples": 10 * max(d, 1),
                "accuracy": {"test": 20.0 + 10 * d, "validation": 30.0},
                "seconds": 1.5,
            }
        },
    }
    from pathlib import Path

    Path(out).mkdir(parents=True, exist_ok=True)
    (Path(out) / "results.json").write_text(json.dumps(res))


def test_run_local_collect_render(tmp_path):
    runs = study.plan(["baseline", "finetune_cot", "scicot"], [1, 2], [1.0], ["tiny"])
    status = study.run_local(runs, tmp_path, ["--task", "t"], _fake_pipeline, log=lambda s: None)
    assert status["scicot_d2_f1_tiny"] == "failed"
    assert (tmp_path / "runs/scicot_d2_f1_tiny/error.txt").exists()
    rows = study.collect(tmp_path)
    assert len(rows) == 4
    ft = sorted((r["degree"], r["accuracy_test"]) for r in rows if r["method"] == "finetune_cot")
    assert ft == [(1, 30.0), (2, 40.0)]
    paths = study.render(rows, tmp_path)
    assert paths["csv"].read_text().splitlines()[0].startswith("run,method,selection,degree")
    assert "| finetune_cot_d2_f1_tiny | finetune_cot |" in paths["md"].read_text()
    for key in ("degree", "rationales"):
        assert paths[key].read_bytes()[:4] == b"\x89PNG"


def test_cli_plan_writes_script(tmp_path, capsys):
    assert (
        main(
            [
                "plan",
                "--out",
                str(tmp_path),
                "--methods",
                "finetune_cot",
                "--degrees",
                "1,8",
                "--tpu-name",
                "tpu1",
                "--zone",
                "z",
                "--",
                "--task",
                "svamp",
            ]
        )
        == 0
    )
    script = (tmp_path / "commands.sh").read_text()
    assert script.count("gcloud compute tpus tpu-vm ssh tpu1") == 2
    assert len(json.loads((tmp_path / "plan.json").read_text())) == 2
    assert "finetune_cot:8" in capsys.readouterr().out
