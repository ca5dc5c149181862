"""Scaling studies: a sweep over degree D, train fraction, student size and method.

``plan`` expands the axes into runs; each run is one pipeline invocation (``run_pipeline.py
run``) with its own run directory under ``<study>/runs/<name>``. ``commands`` writes the launch
line of every run (plain, or wrapped for a Cloud TPU VM with ``gcloud ... ssh --worker=all``);
``run_local`` executes them in sequence in this process. ``collect`` reads every run's
``results.json`` (one row per run, method and seed), ``summarize`` groups seeds into mean and
standard deviation, and ``render`` writes ``study.csv`` (per seed), ``summary.csv``,
``study.md`` and PNG plots (``study_plots``).
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
    "seed",
    "rationales_used",
    "train_examples",
    "accuracy_test",
    "accuracy_validation",
    "teacher_accuracy",
    "chance",
    "train_steps",
    "train_tokens",
    "train_flops",
    "student_steps",
    "student_tokens",
    "student_flops",
    "stage2_steps",
    "stage2_tokens",
    "stage2_flops",
    "probe_steps",
    "probe_tokens",
    "probe_flops",
    "stage1_rationale_accuracy_train",
    "stage1_rationale_accuracy_test",
    "flawed_share_kept",
    "flawed_share_candidates",
    "rationalised_share_kept",
    "rationalised_share_candidates",
    "wall_seconds",
)
# A point of the sweep: what stays fixed across seeds.
POINT = ("method", "degree", "train_fraction", "student")
SUMMARY_COLUMNS = (
    *POINT,
    "seeds",
    "accuracy_test_mean",
    "accuracy_test_std",
    "accuracy_validation_mean",
    "accuracy_validation_std",
    "teacher_accuracy_mean",
    "chance",
    "train_tokens_mean",
    "train_flops_mean",
    "rationales_used_mean",
    "student_tokens_mean",
    "flawed_share_kept_mean",
)


@dataclass(frozen=True)
class StudyRun:
    """One point of the sweep."""

    name: str
    method: str  # "baseline", "finetune_cot", "scicot", optionally "+morsd"
    degree: int  # 0 for methods without rationales
    train_fraction: float
    student: str
    seed: int = 0

    def method_spec(self) -> str:
        """The pipeline's ``--methods`` entry for this run."""
        return self.method if self.degree == 0 else f"{self.method}:{self.degree}"

    def argv(self, out_dir: str) -> list[str]:
        """Pipeline arguments specific to this run."""
        return [
            "--methods",
            self.method_spec(),
            "--train_fraction",
            f"{self.train_fraction:g}",
            "--student.size",
            self.student,
            "--seed",
            str(self.seed),
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
    seeds: Sequence[int] = (0,),
) -> list[StudyRun]:
    """All runs of the sweep, once per seed; methods without rationales get one run per
    (fraction, student, seed)."""
    runs = []
    tag = (lambda s: "") if tuple(seeds) == (0,) else (lambda s: f"_s{s}")
    for seed, student in ((se, st) for se in seeds for st in students):
        for frac in fractions:
            if not 0.0 < frac <= 1.0:
                raise ValueError(f"train fraction must be in (0, 1], got {frac}")
            for method in methods:
                base = method.split("+")[0]
                for d in (0,) if base in NO_DEGREE_METHODS else degrees:
                    if base not in NO_DEGREE_METHODS and d < 1:
                        raise ValueError(f"degree must be >= 1 for {method}, got {d}")
                    name = f"{method.replace('+', '-')}_d{d}_f{_fmt_fraction(frac)}_{student}"
                    runs.append(StudyRun(name + tag(seed), method, d, frac, student, seed))
    return runs


@dataclass(frozen=True)
class GroupRun:
    """One run directory holding every method at one degree D and seed, as the demo does: the
    methods share data, teacher samples and vocabulary, and are compared on them."""

    name: str
    methods: tuple[str, ...]
    degree: int
    seed: int
    config: str  # the run's configuration (PipelineConfig JSON)

    def argv(self, out_dir: str) -> list[str]:
        """Pipeline arguments of this run: its configuration and its directory."""
        return ["--config", self.config, "--out", out_dir]


def run_dir(study_dir: str | Path, run: StudyRun | GroupRun) -> Path:
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
    runs: Sequence[StudyRun | GroupRun],
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


def write_plan(
    study_dir: str | Path, runs: Sequence[StudyRun | GroupRun], lines: Sequence[str]
) -> Path:
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
    runs: Sequence[StudyRun | GroupRun],
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


def run_parallel(
    runs: Sequence[StudyRun | GroupRun],
    study_dir: str | Path,
    lines: Sequence[str],
    jobs: int,
    env: dict | None = None,
    log: Callable[[str], None] = print,
) -> dict[str, str]:
    """Run the launch lines ``jobs`` at a time in subprocesses (``runs/<name>.log`` each); a
    failed run is logged and the sweep goes on. Tiny students use about one core each, so
    two single-threaded runs on two cores finish about twice as fast as one after another."""
    import os
    import subprocess
    from concurrent.futures import ThreadPoolExecutor

    def one(item: tuple[StudyRun | GroupRun, str]) -> tuple[str, str]:
        run, line = item
        path = Path(study_dir) / "runs" / f"{run.name}.log"
        path.parent.mkdir(parents=True, exist_ok=True)
        t0 = time.time()
        log(f"[study] start {run.name}")
        with open(path, "ab") as f:
            rc = subprocess.call(line, shell=True, stdout=f, stderr=subprocess.STDOUT,
                                 env={**os.environ, **(env or {})})  # fmt: skip
        status = "ok" if rc == 0 else f"failed (exit {rc}, {path})"
        log(f"[study] {run.name}: {status} in {time.time() - t0:.0f}s")
        return run.name, status

    with ThreadPoolExecutor(max_workers=jobs) as pool:
        status = dict(pool.map(one, zip(runs, lines)))
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
        cfg, plan_row = res.get("config", {}), planned.get(name, {})
        for key, m in res.get("methods", {}).items():
            acc = m.get("accuracy", {})
            rows.append(
                {
                    "run": name,
                    "method": m.get("method", key)
                    + {"morsd": "+morsd", "random": "+random"}.get(m.get("selection"), ""),
                    "selection": m.get("selection", "none"),
                    "degree": m.get("degree", 0),
                    "train_fraction": cfg.get("train_fraction", plan_row.get("train_fraction")),
                    "student": cfg.get("student", plan_row.get("student")),
                    "seed": cfg.get("seed", plan_row.get("seed", 0)),
                    "rationales_used": m.get("rationales_used", 0),
                    "train_examples": m.get("train_examples"),
                    "accuracy_test": acc.get("test"),
                    "accuracy_validation": acc.get("validation"),
                    "teacher_accuracy": m.get("teacher_accuracy"),
                    "chance": res.get("chance"),
                    "train_steps": m.get("train_steps"),
                    "train_tokens": m.get("train_tokens"),
                    "train_flops": m.get("train_flops"),
                    **_stage_columns(m),
                    "wall_seconds": m.get("seconds"),
                }
            )
    return rows


def read_rows(path: str | Path) -> list[dict]:
    """The rows of a study.csv (as ``collect`` made them): plots and tables can be remade from
    the shipped CSV alone, without the run directories."""

    def value(text: str):
        if text == "":
            return None
        for kind in (int, float):
            try:
                return kind(text)
            except ValueError:
                pass
        return text

    with open(path, newline="") as f:
        return [{k: value(v) for k, v in row.items()} for row in csv.DictReader(f)]


def _stage_columns(m: dict) -> dict:
    """Per-stage compute (results.json ``stages``), Stage-1 rationale accuracy, and the kept
    set's flawed / rationalised shares against all candidates' (oracle runs)."""
    stages = m.get("stages") or {}
    flaws = (m.get("selection_summary") or {}).get("flaws") or {}
    stage1 = m.get("stage1_rationale_answer_accuracy") or {}
    out = {}
    for prefix, key in (("student", "student"), ("stage2", "stage2"), ("probe", "probes")):
        st = stages.get(key) or {}
        out.update({f"{prefix}_steps": st.get("steps"), f"{prefix}_tokens": st.get("train_tokens"),
                    f"{prefix}_flops": st.get("train_flops")})  # fmt: skip
    out["stage1_rationale_accuracy_train"] = stage1.get("train")
    out["stage1_rationale_accuracy_test"] = stage1.get("test")
    for k in ("flawed", "rationalised"):
        for side in ("kept", "candidates"):
            out[f"{k}_share_{side}"] = flaws.get(f"{k}_share_{side}")
    return out


def mean_std(xs: Sequence[float]) -> tuple[float | None, float | None]:
    """Mean and sample standard deviation (0 for one value; None for none)."""
    xs = [float(x) for x in xs if x is not None]
    if not xs:
        return None, None
    mean = sum(xs) / len(xs)
    var = sum((x - mean) ** 2 for x in xs) / (len(xs) - 1) if len(xs) > 1 else 0.0
    return round(mean, 2), round(var**0.5, 2)


def summarize(rows: Sequence[dict]) -> list[dict]:
    """One row per sweep point (method, D, fraction, student): mean and std over its seeds."""
    groups: dict[tuple, list[dict]] = defaultdict(list)
    for r in rows:
        groups[tuple(r.get(k) for k in POINT)].append(r)
    out = []
    for key, rs in groups.items():
        row = dict(zip(POINT, key))
        row["seeds"] = len(rs)
        for col in ("accuracy_test", "accuracy_validation"):
            row[f"{col}_mean"], row[f"{col}_std"] = mean_std([r.get(col) for r in rs])
        row["teacher_accuracy_mean"] = mean_std([r.get("teacher_accuracy") for r in rs])[0]
        row["chance"] = rs[0].get("chance")
        row["train_tokens_mean"] = mean_std([r.get("train_tokens") for r in rs])[0]
        row["train_flops_mean"] = mean_std([r.get("train_flops") for r in rs])[0]
        for col in ("rationales_used", "student_tokens", "flawed_share_kept"):
            row[f"{col}_mean"] = mean_std([r.get(col) for r in rs])[0]
        out.append(row)
    return out


def _cell(v) -> str:
    if isinstance(v, float):
        return f"{v:.2f}" if abs(v) < 1e4 else f"{v:.3g}"
    return "" if v is None else str(v)


def _write_csv(path: Path, rows: Sequence[dict], columns: Sequence[str]) -> None:
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(columns))
        w.writeheader()
        for r in rows:
            w.writerow({c: r.get(c) for c in columns})


def render(
    rows: Sequence[dict], out_dir: str | Path, title: str = "Scaling study"
) -> dict[str, Path]:
    """Write study.csv (per seed), summary.csv, study.md and the PNG plots; returns paths."""
    from scicot_jax.pipeline import study_plots

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    summary = summarize(rows)
    paths = {"csv": out / "study.csv", "summary": out / "summary.csv", "md": out / "study.md"}
    _write_csv(paths["csv"], rows, COLUMNS)
    _write_csv(paths["summary"], summary, SUMMARY_COLUMNS)
    md = [
        f"# {title}",
        "",
        "Test accuracy in percent, mean ± standard deviation over seeds.",
        "",
        "| method | D | train fraction | student | seeds | test acc % | validation acc % "
        "| teacher acc % | train tokens | train FLOPs |",
        "|---|---:|---:|---|---:|---:|---:|---:|---:|---:|",
    ]
    for r in summary:
        md.append(
            f"| {r['method']} | {r['degree'] or ''} | {r['train_fraction']} | {r['student']} | "
            f"{r['seeds']} | {_cell(r['accuracy_test_mean'])} ± {_cell(r['accuracy_test_std'])} | "
            f"{_cell(r['accuracy_validation_mean'])} ± {_cell(r['accuracy_validation_std'])} | "
            f"{_teacher_cell(r)} | {_cell(r['train_tokens_mean'])} | "
            f"{_cell(r['train_flops_mean'])} |"
        )
    md += ["", "## Every run", "", "| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    md += ["| " + " | ".join(_cell(r.get(c)) for c in COLUMNS) + " |" for r in rows]
    paths["md"].write_text("\n".join(md) + "\n")
    paths.update(study_plots.plot_all(summary, out))
    return paths


def _teacher_cell(r: dict) -> str:
    """The teacher's accuracy; "answers given" where the prompt held the answer."""
    from scicot_jax.pipeline.config import ANSWERS_GIVEN, PROMPT_FOR

    if PROMPT_FOR.get(r["method"].partition("+")[0]) in ANSWERS_GIVEN:
        return "answers given"
    return _cell(r["teacher_accuracy_mean"])
