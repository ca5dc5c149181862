"""A run's methods in worker processes (pipeline.arms): parts, their order, the scheduler."""

import sys
import time
from pathlib import Path

import pytest

from scicot_jax.pipeline import arms
from scicot_jax.pipeline.demo import demo_config
from scicot_jax.pipeline.run import Pipeline


def test_demo_parts_probes_first_morsd_after_them(tmp_path):
    cfg = demo_config(str(tmp_path / "demo"), 0)
    parts = arms.parts(Pipeline(cfg, student=None))
    names = [q.name for q in parts]
    probes = ["probe0_answer_conditioned_t0.7_d4", "probe1_answer_conditioned_t0.7_d4"]
    assert names == [*probes, *cfg.methods]
    by = {q.name: q for q in parts}
    assert by["scicot+morsd:4"].after == tuple(probes)
    assert by["scicot+morsd:4"].done == "eval_scicot-morsd_d4"
    assert all(not by[m].after for m in cfg.methods if "morsd" not in m)
    prio = arms._priority(parts)
    # the probes lead the longest chain (probes, then MoRSD's own steps): they start first
    order = sorted(names, key=lambda n: -prio[n])
    assert order[:3] == [*probes, "scicot+morsd:4"] or order[:2] == probes
    # a finished part has work again when one of its own steps is to be redone
    run = tmp_path / "demo"
    for q in parts:
        (run / q.done).mkdir(parents=True)
        (run / q.done / "DONE.json").write_text("{}")
    assert not any(arms._to_do(q, run, ()) for q in parts)
    redo = ("stage2_scicot_d4", probes[1])
    assert [q.name for q in parts if arms._to_do(q, run, redo)] == [probes[1], "scicot:4"]


SLEEPER = """import sys, time
name, seconds, record, rc = sys.argv[1], float(sys.argv[2]), sys.argv[3], int(sys.argv[4])
t = time.time()
time.sleep(seconds)
open(record, "a").write(f"{name} {t} {time.time()}\\n")
print("worked")
sys.exit(rc)
"""


def _sleeper(record: Path, seconds: dict, fail: str | None = None):
    """A command per part: sleep, then append `name start end` to `record` (or exit 3)."""

    def command(run_dir: Path, part: arms.Part) -> list[str]:
        rc = 3 if part.name == fail else 0
        secs = seconds.get(part.name, 0.2)
        return [sys.executable, "-c", SLEEPER, part.name, str(secs), str(record), str(rc)]

    return command


def _spans(record: Path) -> dict[str, tuple[float, float]]:
    return {
        n: (float(a), float(b)) for n, a, b in (x.split() for x in record.read_text().splitlines())
    }


def test_schedule_runs_jobs_at_a_time_dependencies_first(tmp_path):
    P = arms.Part
    todo = [
        P("p0", "p0", "p0", cost=1),
        P("p1", "p1", "p1", cost=1),
        P("m", "m", "m", ("p0", "p1"), cost=5),
        P("a", "a", "a", cost=2),
        P("b", "b", "b", cost=1),
    ]
    record = tmp_path / "record.txt"
    lines = []
    arms.schedule(todo, tmp_path, 2, lines.append, _sleeper(record, {"m": 0.6}))
    spans = _spans(record)
    assert set(spans) == {"p0", "p1", "m", "a", "b"}
    assert spans["m"][0] >= max(spans["p0"][1], spans["p1"][1])  # after both probes
    events = sorted([(s, 1) for s, _ in spans.values()] + [(e, -1) for _, e in spans.values()])
    at_once, most = 0, 0
    for _, step in events:
        at_once += step
        most = max(most, at_once)
    assert most == 2
    # the critical chain starts first
    assert sorted(spans, key=lambda n: spans[n][0])[:2] in (["p0", "p1"], ["p1", "p0"])
    assert (tmp_path / "logs" / "m.log").read_text() == "worked\n"
    assert any("m finished" in x for x in lines)


def test_schedule_stops_starting_on_a_failure_and_names_the_log(tmp_path):
    P = arms.Part
    todo = [P("bad", "bad", "bad", cost=3), P("x", "x", "x", cost=2), P("y", "y", "y", cost=1)]
    record = tmp_path / "record.txt"
    t0 = time.time()
    with pytest.raises(RuntimeError, match=r"bad \(exit 3, log .*logs/bad.log\)"):
        arms.schedule(todo, tmp_path, 2, lambda s: None, _sleeper(record, {"x": 0.8}, "bad"))
    spans = _spans(record)
    assert "x" in spans and "y" not in spans  # x was running: it finished; y never started
    assert time.time() - t0 < 30


@pytest.mark.slow  # two tiny demo runs (one in workers, one in-process): ~3 min on 2 cores
def test_demo_in_two_workers_matches_the_sequential_run_and_resumes(tmp_path):
    from dataclasses import replace

    from scicot_jax.pipeline.run import run_pipeline

    cfg = demo_config(str(tmp_path / "par"), 0, train=24, steps=2, stage2_steps=2, scorer_steps=2)
    cfg = replace(
        cfg,
        methods=("baseline", "scicot+morsd:4", "scicot+random:4"),
        limits={"train": 24, "validation": 4, "test": 4},
        student=replace(cfg.student, batch_size=8, eval_batch_size=8),
    )
    lines = []
    res = arms.run_arms(cfg, 2, log=lines.append)
    seq = run_pipeline(replace(cfg, out=str(tmp_path / "seq")), log=lambda s: None)

    def finished(d):
        return sorted(p.name for p in d.iterdir() if (p / "DONE.json").exists())

    assert finished(tmp_path / "par") == finished(tmp_path / "seq")  # the same layout
    assert set(res["steps"]) == set(seq["steps"])  # the probes too, which the final pass skips
    probes = sum(res["steps"][f"probe{h}_answer_conditioned_t0.7_d4"] for h in (0, 1))
    own = sum(v for k, v in res["steps"].items() if k.endswith("_scicot-morsd_d4") and k != "eval")
    assert res["methods"]["scicot+morsd:4"]["seconds"] == pytest.approx(probes + own, abs=0.2)
    for label, m in seq["methods"].items():
        got = res["methods"][label]
        assert got["stages"].keys() == m["stages"].keys()
        assert got["rationales_used"] == m.get("rationales_used", got["rationales_used"])
    logs = sorted(p.name for p in (tmp_path / "par" / "logs").iterdir())
    assert logs == sorted(
        [
            "baseline.log",
            "probe0_answer_conditioned_t0.7_d4.log",
            "probe1_answer_conditioned_t0.7_d4.log",
            "scicot-morsd_d4.log",
            "scicot-random_d4.log",
        ]
    )
    assert (tmp_path / "par" / "results.md").read_text().count("| scicot+morsd:4 |") >= 1
    # resumed: every step is finished, no worker starts; --redo one step: only its part runs
    again = []
    res2 = arms.run_arms(cfg, 2, log=again.append)
    assert not any("started" in x for x in again)
    assert set(res2["skipped_steps"]) == set(res2["steps"])
    # only some methods (a design experiment): the shared steps stay the whole run's
    part = arms.run_arms(cfg, 2, log=lambda s: None, only=("scicot+random:4",))
    assert list(part["methods"]) == ["scicot+random:4"]
    redo = []
    arms.run_arms(cfg, 2, redo=("train_baseline",), log=redo.append)
    assert [x.split()[1] for x in redo if x.startswith("[arms]") and "started" in x] == ["baseline"]
