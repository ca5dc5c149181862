"""Scaling study: plan expansion, launch lines, local runner, collection and rendering."""

import json
import shlex
from pathlib import Path

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
        "--train_fraction",
        "0.5",
        "--student.size",
        "tiny",
        "--seed",
        "0",
        "--out",
        "o",
    ]
    seeded = study.plan(["finetune_cot"], [4], [1.0], ["tiny"], seeds=range(3))
    assert [r.name for r in seeded] == [f"finetune_cot_d4_f1_tiny_s{s}" for s in range(3)]
    assert seeded[2].argv("o")[-4:] == ["--seed", "2", "--out", "o"]


def test_commands_local_and_tpu(tmp_path):
    runs = study.plan(["scicot"], [2], [1.0], ["small"])
    base = ["--task", "arc_easy", "--student.gin", "BATCH_SIZE=128"]
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
    seed = int(argv[argv.index("--seed") + 1])
    res = {
        "chance": 25.0,
        "config": {
            "train_fraction": float(argv[argv.index("--train_fraction") + 1]),
            "student": argv[argv.index("--student.size") + 1],
            "seed": seed,
        },
        "methods": {
            spec: {
                "method": method,
                "selection": "none",
                "degree": d,
                "rationales_used": 10 * d,
                "train_examples": 10 * max(d, 1),
                "accuracy": {"test": 20.0 + 10 * d + 2 * seed, "validation": 30.0},
                "teacher_accuracy": 80.0 if d else None,
                "train_tokens": 1000 * (d + 1),
                "seconds": 1.5,
            }
        },
    }
    from pathlib import Path

    Path(out).mkdir(parents=True, exist_ok=True)
    (Path(out) / "results.json").write_text(json.dumps(res))


def test_run_local_collect_render(tmp_path):
    runs = study.plan(["baseline", "finetune_cot", "scicot"], [1, 2], [1.0], ["tiny"], range(3))
    status = study.run_local(runs, tmp_path, ["--task", "t"], _fake_pipeline, log=lambda s: None)
    assert status["scicot_d2_f1_tiny_s0"] == "failed"
    assert (tmp_path / "runs/scicot_d2_f1_tiny_s0/error.txt").exists()
    rows = study.collect(tmp_path)
    assert len(rows) == 4 * 3  # one row per run and seed
    ft = sorted(
        (r["degree"], r["seed"], r["accuracy_test"]) for r in rows if r["method"] == "finetune_cot"
    )
    assert ft[:3] == [(1, 0, 30.0), (1, 1, 32.0), (1, 2, 34.0)]
    summary = {(r["method"], r["degree"]): r for r in study.summarize(rows)}
    ft2 = summary["finetune_cot", 2]
    assert ft2["seeds"] == 3 and ft2["accuracy_test_mean"] == 42.0
    assert ft2["accuracy_test_std"] == 2.0  # sample std of 40, 42, 44
    paths = study.render(rows, tmp_path)
    assert paths["csv"].read_text().splitlines()[0].startswith("run,method,selection,degree")
    assert len(paths["csv"].read_text().splitlines()) == 1 + 12
    assert len(paths["summary"].read_text().splitlines()) == 1 + 4
    md = paths["md"].read_text()
    assert "| finetune_cot | 2 | 1.0 | tiny | 3 | 42.00 ± 2.00 |" in md
    scicot = next(line for line in md.splitlines() if line.startswith("| scicot | 1 |"))
    assert "| answers given |" in scicot and "80.00" not in scicot  # no teacher "accuracy"
    for key in ("degree", "train_fraction", "student", "train_tokens", "method"):
        assert paths[key].read_bytes()[:4] == b"\x89PNG", key
    # the shipped CSV alone remakes the same CSV, summary and plots (no run directories)
    again = tmp_path / "again"
    assert main(["report", str(paths["csv"]), "--out", str(again)]) == 0
    assert (again / "study.csv").read_text() == paths["csv"].read_text()
    assert (again / "summary.csv").read_text() == paths["summary"].read_text()
    assert (again / "accuracy_vs_degree.png").read_bytes()[:4] == b"\x89PNG"


def test_plot_axes_are_fixed_with_chance_and_teacher_lines(tmp_path, monkeypatch):
    import matplotlib.pyplot as plt

    from scicot_jax.pipeline import study_plots

    seen = {}
    real_savefig = plt.Figure.savefig

    def spy(fig, path, **kw):
        ax = fig.axes[0]
        seen[Path(path).name] = (ax.get_ylim(), [t.get_text() for t in ax.get_legend().texts])
        teacher_y = {ln.get_label(): ln.get_ydata()[0] for ln in ax.get_lines()
                     if ln.get_label().startswith("teacher")}  # fmt: skip
        # the zero-shot teacher's accuracy; the answer-conditioned one was given the answers
        assert teacher_y == {"teacher (zero-shot CoT)": 72.0}
        renderer = fig.canvas.get_renderer()  # the legend sits right of the axes, over no data
        assert ax.get_legend().get_window_extent(renderer).x0 >= ax.get_window_extent().x1
        if Path(path).name == "accuracy_vs_train_fraction.png":
            seen["fraction_xlim"] = ax.get_xlim()  # one fraction is not a 0.96-1.04 "trend"
        markers = [m for ln in ax.get_lines() if (m := ln.get_marker()) not in ("None", "_", "|")]
        seen.setdefault("markers", []).append(markers)
        return real_savefig(fig, path, **kw)

    monkeypatch.setattr(plt.Figure, "savefig", spy)
    summary = [
        {"method": "baseline", "degree": 0, "train_fraction": 1.0, "student": "tiny",
         "accuracy_test_mean": 24.0, "accuracy_test_std": 0.5, "chance": 25.0,
         "teacher_accuracy_mean": None, "train_tokens_mean": 1e5},
        {"method": "finetune_cot", "degree": 1, "train_fraction": 1.0, "student": "tiny",
         "accuracy_test_mean": 25.0, "accuracy_test_std": 1.0, "chance": 25.0,
         "teacher_accuracy_mean": 70.0, "train_tokens_mean": 1e5},
        {"method": "finetune_cot", "degree": 4, "train_fraction": 1.0, "student": "tiny",
         "accuracy_test_mean": 26.0, "accuracy_test_std": 1.0, "chance": 25.0,
         "teacher_accuracy_mean": 74.0, "train_tokens_mean": 1e5},
        {"method": "scicot+morsd", "degree": 4, "train_fraction": 1.0, "student": "tiny",
         "accuracy_test_mean": 27.0, "accuracy_test_std": 1.0, "chance": 25.0,
         "teacher_accuracy_mean": 100.0, "train_tokens_mean": 1e5},
    ]  # fmt: skip
    study_plots.plot_all(summary, tmp_path)
    assert seen.pop("fraction_xlim") == (0.0, 1.05)
    for markers in seen.pop("markers"):  # series at one point stay distinguishable
        assert len(set(markers)) == len(markers), markers
    assert set(seen) == {
        "accuracy_vs_degree.png",
        "accuracy_vs_train_fraction.png",
        "accuracy_vs_student.png",
        "accuracy_vs_train_tokens.png",
        "accuracy_by_method.png",
    }
    for ylim, legend in seen.values():  # 24-26 % must not look like a steep trend
        assert ylim == (0.0, 100.0)
        assert "chance" in legend and "teacher (zero-shot CoT)" in legend


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


def test_demo_plan_groups_methods_per_degree_and_seed(tmp_path):
    from scicot_jax.pipeline.config import PipelineConfig
    from scicot_jax.pipeline.demo import DEMO_METHODS, demo_config, demo_plan

    methods = ["baseline", "finetune_cot", "scicot", "scicot+morsd", "scicot+random"]
    runs = demo_plan(tmp_path, methods, [1, 2, 4, 8], [3, 4])
    assert [r.name for r in runs[:4]] == [f"demo_d{d}_s3" for d in (1, 2, 4, 8)]
    by = {r.name: r for r in runs}
    # D = 1: one rationale per question, so MoRSD and its control would keep Sci-CoT's data
    assert by["demo_d1_s3"].methods == ("finetune_cot:1", "scicot:1")
    # the baseline has no D: once per seed, in the demo's D = 4 run
    assert [r.name for r in runs if "baseline" in r.methods] == ["demo_d4_s3", "demo_d4_s4"]
    cfg = lambda name: PipelineConfig.from_dict(json.loads(Path(by[name].config).read_text()))  # noqa: E731
    # the D = 4 run is the demo's run (same config but for its directory)
    d4 = cfg("demo_d4_s4")
    assert d4 == demo_config(d4.out, 4) and d4.methods == DEMO_METHODS
    assert d4.out == str(tmp_path / "runs" / "demo_d4_s4")
    # selecting arms keep half of D (at least one)
    assert cfg("demo_d8_s3").selection.per_question == 4
    assert cfg("demo_d2_s3").selection.per_question == 1
    assert by["demo_d8_s3"].argv("o") == ["--config", by["demo_d8_s3"].config, "--out", "o"]
    assert "scicot+morsd:8" in cfg("demo_d8_s3").methods


def test_cli_demo_grid_plan_with_seed_ids(tmp_path, capsys):
    argv = ["plan", "--out", str(tmp_path), "--demo-base", "--methods", "baseline,scicot"]
    assert main([*argv, "--degrees", "4,8", "--seed-ids", "3,5"]) == 0
    plan = json.loads((tmp_path / "plan.json").read_text())
    assert [p["name"] for p in plan] == ["demo_d4_s3", "demo_d8_s3", "demo_d4_s5", "demo_d8_s5"]
    assert "--config" in capsys.readouterr().out
