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


def _run(tmp_path, match):
    cfg = PipelineConfig(
        task="synthetic_compass",
        out=str(tmp_path / match),
        methods=METHODS,
        limits={"train": 40, "validation": 4, "test": 4},
        student=StudentConfig(steps=200, batch_size=8),
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
    assert "train tokens" in md and "train FLOPs" in md and "match tokens" in md


def test_methods_train_equal_steps(tmp_path):
    m = _run(tmp_path, "steps")["methods"]
    assert {v["train_steps"] for v in m.values()} == {200}  # MoRSD: probes 50 + stages 150


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
