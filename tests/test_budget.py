"""Compute-matched methods: equal train tokens (or steps) per method, MoRSD probes included;
--epochs beside --steps; the paper's recipe for Fine-tune-CoT cards."""

import pytest
from test_pipeline_flow import FakeStudent

from scicot_jax.pipeline import cli
from scicot_jax.pipeline import run as run_mod
from scicot_jax.pipeline.budget import Budget
from scicot_jax.pipeline.config import PipelineConfig, StudentConfig

METHODS = ("baseline", "finetune_cot:1", "scicot:1", "scicot+morsd:2")


class CountingStudent(FakeStudent):
    """Reports compute the way the real students do: steps x batch x tokens per example."""

    batch_size = 8

    def tokens_per_example(self, pairs):
        return sum(len(i.split()) + len(t.split()) for i, t in pairs) / len(pairs)

    def train(self, pairs, out_dir, *, stage, task, steps=None):
        out = super().train(pairs, out_dir, stage=stage, task=task, steps=steps)
        tokens = steps * self.batch_size * self.tokens_per_example(pairs)
        return {**out, "steps": steps, "train_tokens": int(tokens), "train_flops": 6 * int(tokens)}


def _run(tmp_path, match, methods=METHODS, **student):
    cfg = PipelineConfig(
        task="synthetic_compass",
        out=str(tmp_path / match),
        methods=methods,
        limits={"train": 40, "validation": 4, "test": 4},
        student=StudentConfig(steps=200, batch_size=8, **student),
        match=match,
    )
    return run_mod.Pipeline(cfg, CountingStudent(), log=lambda s: None).run()


def test_methods_train_on_equal_tokens(tmp_path):
    res = _run(tmp_path, "tokens")
    m = res["methods"]
    budget = res["config"]["budget"]
    for label in METHODS:  # rounding to whole steps: within 2 % of the budget
        assert m[label]["train_tokens"] == pytest.approx(budget["tokens"], rel=0.02), label
    # rationale methods have longer examples, so they take fewer steps than plain fine-tuning
    assert m["baseline"]["train_steps"] == 200
    assert m["finetune_cot:1"]["train_steps"] < 200
    md = (tmp_path / "tokens" / "results.md").read_text()
    assert "total tokens" in md and "total FLOPs" in md and "match tokens" in md


def test_methods_train_equal_steps(tmp_path):
    m = _run(tmp_path, "steps")["methods"]
    assert {v["train_steps"] for v in m.values()} == {200}  # MoRSD: probes 50 + stages 150


def test_rationale_students_train_equal_steps_overhead_apart(tmp_path):
    """match rationale_student: every student trained on the question (baseline, Fine-tune-CoT,
    Sci-CoT Stage 1, with or without MoRSD) trains --steps; Stage 2 and the probes train their
    own steps and are reported per stage, not taken out of Stage 1."""
    methods = (*METHODS, "finetune_cot:2")
    res = _run(tmp_path, "rationale_student", methods, stage2_steps=30, scorer_steps=20)
    m = res["methods"]
    assert {v["stages"]["student"]["steps"] for v in m.values()} == {200}
    assert m["scicot:1"]["stages"]["stage2"]["steps"] == 30
    assert "probes" not in m["scicot:1"]["stages"]
    morsd = m["scicot+morsd:2"]["stages"]
    assert morsd["probes"]["steps"] == 2 * 20 and morsd["stage2"]["steps"] == 30
    assert m["scicot+morsd:2"]["train_steps"] == 200 + 30 + 40  # total = sum of the stages
    # the rationale students' tokens differ only by their rows' lengths (same steps, same batch)
    ft, sci = m["finetune_cot:1"]["stages"]["student"], m["scicot:1"]["stages"]["student"]
    assert ft["train_tokens"] == pytest.approx(sci["train_tokens"], rel=0.15)
    md = (tmp_path / "rationale_student" / "results.md").read_text()
    assert "match rationale_student" in md and "| Stage 2 steps |" in md
    row = next(line for line in md.splitlines() if line.startswith("| scicot+morsd:2 "))
    assert "| 200 |" in row and "| 30 |" in row and "| 40 |" in row


def test_budget_shares_and_epochs():
    b = Budget("tokens", 100, 10, 20.0)
    assert b.tokens == 100 * 10 * 20.0
    assert b.stage_steps(b.share("scicot", "stage1", False), 40.0, 0) == round(2 / 3 * 50)
    assert b.share("scicot", "scorer", True) + b.share("scicot", "stage1", True) + b.share(
        "scicot", "stage2", True
    ) == pytest.approx(1.0)
    e = Budget("steps", 100, 10, 20.0, epochs=2, train_rows=55)
    assert e.reference_steps == 11  # ceil(2 * 55 / 10)
    own = Budget("none", 100, 10, 20.0, epochs=20, train_rows=55)
    assert own.stage_steps(1.0, 99.0, 30) == 60  # each stage: 20 epochs of its own data
    assert Budget("none", 100, 10, 20.0).stage_steps(1.0, 9.0, 30) is None
    with pytest.raises(ValueError, match="match"):
        Budget("flops", 1, 1, 1.0)
    r = Budget("rationale_student", 100, 10, 20.0, epochs=2, train_rows=55)
    assert r.stage_steps(r.share("scicot", "stage1", True), 99.0, 400) == 11  # = baseline's
    assert r.share("scicot", "stage2", False) is None  # overhead: 2 epochs of its own data
    assert r.stage_steps(None, 9.0, 30) == 6


def test_cli_epochs_steps_and_paper_recipe(tmp_path):
    def cfg(*extra):
        return cli.config_from_args(
            cli._parser().parse_args(["run", "--out", str(tmp_path), *extra])
        )

    assert cfg("--task", "ftcot_svamp").student.epochs == 20  # Fine-tune-CoT's recipe
    assert cfg("--task", "ftcot_svamp", "--steps", "50").student.epochs is None
    assert cfg("--task", "synthetic_mc").student.epochs is None
    c = cfg("--task", "synthetic_mc", "--epochs", "3", "--match", "steps")
    assert c.student.epochs == 3 and c.match == "steps"
    c = cfg("--task", "synthetic_mc", "--match", "rationale_student", "--scorer-steps", "7")
    assert c.match == "rationale_student" and c.student.scorer_steps == 7
