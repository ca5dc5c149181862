"""Scaling studies: a sweep over degree D, train fraction, student size and method.

``plan`` expands the axes into runs; each run is one pipeline invocation (``run_pipeline.py
run``) with its own run directory under ``<study>/runs/<name>``. ``commands`` writes the launch
line of every run (plain, or wrapped for a Cloud TPU VM with ``gcloud ... ssh --worker=all``);
``run_local`` executes them in sequence in this process. ``collect`` reads every run's
``results.json`` and ``render`` writes ``study.csv``, ``study.md`` and PNG plots.
"""

from __future__ import annotations

import csv
import json
import shlex
import time
import traceback
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

NO_DEGREE_METHODS = ("baseline",)
COLUMNS = (
    "run",
    "method",
    "selection",
    "degree",
    "train_fraction",
    "student",
    "rationales_used",
    "train_examples",
    "accuracy_test",
    "accuracy_validation",
    "teacher_accuracy",
    "train_tokens",
    "wall_seconds",
)


@dataclass(frozen=True)
class StudyRun:
    """One point of the sweep."""

    name: str
    method: str  # "baseline", "finetune_cot", "scicot", optionally "+morsd"
    degree: int  # 0 for methods without rationales
    train_fraction: float
    student: str

    def method_spec(self) -> str:
        """The pipeline's ``--methods`` entry for this run."""
        return self.method if self.degree == 0 else f"{self.method}:{self.degree}"

    def argv(self, out_dir: str) -> list[str]:
        """Pipeline arguments specific to this run."""
        return [
            "--methods",
            self.method_spec(),
            "--train-fraction",
            f"{self.train_fraction:g}",
            "--student",
            self.student,
            "--out",
            out_dir,
        ]


def _fmt_fraction(f: float) -> str:
    return f"{f:g}".replace(".", "p")


def plan(
    methods: Sequence[str],
    degrees: Sequence[int],
    fractions: Sequence[float] = (1.0,),
    students: Sequence[str] = ("tiny",),
) -> list[StudyRun]:
    """All runs of the sweep; methods without rationales get one run per (fraction, student)."""
    runs = []
    for student in students:
        for frac in fractions:
            if not 0.0 < frac <= 1.0:
                raise ValueError(f"train fraction must be in (0, 1], got {frac}")
            for method in methods:
                base = method.split("+")[0]
                for d in (0,) if base in NO_DEGREE_METHODS else degrees:
                    if base not in NO_DEGREE_METHODS and d < 1:
                        raise ValueError(f"degree must be >= 1 for {method}, got {d}")
                    name = f"{method.replace('+', '-')}_d{d}_f{_fmt_fraction(frac)}_{student}"
                    runs.append(StudyRun(name, method, d, frac, student))
    return runs


def run_dir(study_dir: str | Path, run: StudyRun) -> Path:
    return Path(study_dir) / "runs" / run.name


@dataclass(frozen=True)
class TpuTarget:
    """Where a Cloud TPU launch goes: the VM, and the repo and output folders on its workers."""

    name: str
    zone: str
    project: str | None = None
    repo_dir: str = "~/scicot_jax"
    python: str = "python3"
    gcs_dir: str | None = None  # copy each finished run directory here (gsutil rsync)


def commands(
    runs: Sequence[StudyRun],
    study_dir: str | Path,
    base_args: Sequence[str],
    tpu: TpuTarget | None = None,
    python: str = "python",
) -> list[str]:
    """One shell line per run: the pipeline command, or its gcloud TPU-VM ssh wrapper."""
    lines = []
    for run in runs:
        if tpu is None:
            argv = [
                python,
                "tools/run_pipeline.py",
                "run",
                *base_args,
                *run.argv(str(run_dir(study_dir, run))),
            ]
            lines.append(shlex.join(argv))
            continue
        out = f"{study_dir}/runs/{run.name}"
        inner = shlex.join([tpu.python, "tools/run_pipeline.py", "run", *base_args, *run.argv(out)])
        inner = f"cd {tpu.repo_dir} && {inner}"
        if tpu.gcs_dir:
            inner += (
                f" && gsutil -m rsync -r {shlex.quote(out)} "
                f"{shlex.quote(tpu.gcs_dir.rstrip('/') + '/runs/' + run.name)}"
            )
        ssh = ["gcloud", "compute", "tpus", "tpu-vm", "ssh", tpu.name, f"--zone={tpu.zone}"]
        if tpu.project:
            ssh.append(f"--project={tpu.project}")
        ssh += ["--worker=all", f"--command={inner}"]
        lines.append(shlex.join(ssh))
    return lines


def write_plan(study_dir: str | Path, runs: Sequence[StudyRun], lines: Sequence[str]) -> Path:
    """Save the plan (plan.json) and the launch lines (commands.sh); returns the script path."""
    d = Path(study_dir)
    d.mkdir(parents=True, exist_ok=True)
    (d / "plan.json").write_text(json.dumps([asdict(r) for r in runs], indent=2) + "\n")
    script = d / "commands.sh"
    script.write_text(
        "#!/bin/sh\n# One line per run of the study; run them in any order.\nset -e\n"
        + "\n".join(lines)
        + "\n"
    )
    script.chmod(0o755)
    return script


def run_local(
    runs: Sequence[StudyRun],
    study_dir: str | Path,
    base_args: Sequence[str],
    pipeline_main: Callable[[list[str]], object],
    log: Callable[[str], None] = print,
) -> dict[str, str]:
    """Run each point in sequence in this process; a failed run is logged and the sweep goes on."""
    status = {}
    for i, run in enumerate(runs):
        log(f"[study] run {i + 1}/{len(runs)}: {run.name}")
        t0 = time.time()
        argv = ["run", *base_args, *run.argv(str(run_dir(study_dir, run)))]
        try:
            pipeline_main(argv)
            status[run.name] = "ok"
        except Exception:  # one failed point must not stop a long sweep
            err = traceback.format_exc()
            log(f"[study] {run.name} failed:\n{err}")
            run_dir(study_dir, run).mkdir(parents=True, exist_ok=True)
            (run_dir(study_dir, run) / "error.txt").write_text(err)
            status[run.name] = "failed"
        log(f"[study] {run.name}: {status[run.name]} in {time.time() - t0:.0f}s")
    (Path(study_dir) / "status.json").write_text(json.dumps(status, indent=2) + "\n")
    return status


def collect(study_dir: str | Path) -> list[dict]:
    """One row per (run, method) from ``<study>/runs/*/results.json``, sorted by run name."""
    rows = []
    plan_file = Path(study_dir) / "plan.json"
    planned = (
        {r["name"]: r for r in json.loads(plan_file.read_text())} if plan_file.exists() else {}
    )
    for path in sorted(Path(study_dir).glob("runs/*/results.json")):
        res = json.loads(path.read_text())
        name = path.parent.name
        cfg = res.get("config", {})
        for key, m in res.get("methods", {}).items():
            acc = m.get("accuracy", {})
            rows.append(
                {
                    "run": name,
                    "method": m.get("method", key)
                    + ("+morsd" if m.get("selection") == "morsd" else ""),
                    "selection": m.get("selection", "none"),
                    "degree": m.get("degree", 0),
                    "train_fraction": cfg.get(
                        "train_fraction", planned.get(name, {}).get("train_fraction")
                    ),
                    "student": cfg.get("student", planned.get(name, {}).get("student")),
                    "rationales_used": m.get("rationales_used", 0),
                    "train_examples": m.get("train_examples"),
                    "accuracy_test": acc.get("test"),
                    "accuracy_validation": acc.get("validation"),
                    "teacher_accuracy": m.get("teacher_accuracy"),
                    "train_tokens": m.get("train_tokens"),
                    "wall_seconds": m.get("seconds"),
                }
            )
    return rows


def _cell(v) -> str:
    if isinstance(v, float):
        return f"{v:.4f}" if v < 10 else f"{v:.0f}"
    return "" if v is None else str(v)


def render(
    rows: Sequence[dict], out_dir: str | Path, title: str = "Scaling study"
) -> dict[str, Path]:
    """Write study.csv, study.md, accuracy_vs_degree.png and accuracy_vs_rationales.png."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {"csv": out / "study.csv", "md": out / "study.md"}
    with open(paths["csv"], "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=COLUMNS)
        w.writeheader()
        for r in rows:
            w.writerow({c: r.get(c) for c in COLUMNS})
    md = [f"# {title}", "", "| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    md += ["| " + " | ".join(_cell(r.get(c)) for c in COLUMNS) + " |" for r in rows]
    paths["md"].write_text("\n".join(md) + "\n")
    paths.update(_plots(rows, out))
    return paths


def _series(rows: Sequence[dict], x: str) -> dict[str, list[tuple[float, float]]]:
    """Test accuracy against ``x``, one series per (method, student, fraction)."""
    series = defaultdict(list)
    for r in rows:
        if r.get("accuracy_test") is None or r.get(x) is None:
            continue
        label = f"{r['method']} ({r['student']}, f={r['train_fraction']})"
        series[label].append((float(r[x]), float(r["accuracy_test"])))
    return {k: sorted(v) for k, v in sorted(series.items())}


def _plots(rows: Sequence[dict], out: Path) -> dict[str, Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    paths = {}
    for key, x, xlabel in (
        ("degree", "degree", "diverse-reasoning degree D"),
        ("rationales", "rationales_used", "rationales used for training"),
    ):
        fig, ax = plt.subplots(figsize=(6, 4))
        for label, pts in _series(rows, x).items():
            if x == "degree" and all(px == 0 for px, _ in pts):
                ax.axhline(pts[0][1], ls="--", lw=1, color="gray", label=label)
                continue
            pts = [(px, py) for px, py in pts if px > 0]
            if pts:
                ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", label=label)
        ax.set_xscale("log", base=2 if x == "degree" else 10)
        ax.set_xlabel(xlabel)
        ax.set_ylabel("test accuracy")
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=7)
        fig.tight_layout()
        paths[key] = out / f"accuracy_vs_{key}.png"
        fig.savefig(paths[key], dpi=100)
        plt.close(fig)
    return paths
