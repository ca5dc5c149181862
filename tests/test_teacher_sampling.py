"""Teacher sampling in the pipeline: D = 1 greedy and D > 1 sampled, replay of distinct
recorded samples (or a clear refusal), the validation carve-off flag, errors a new user meets."""

import json

import pytest
from test_pipeline_flow import FakeStudent

from scicot_jax.data import cards
from scicot_jax.data.examples import Example
from scicot_jax.data.store import RationaleStore
from scicot_jax.pipeline import cli, teacher_step
from scicot_jax.pipeline import run as run_mod
from scicot_jax.pipeline.config import PipelineConfig, StudentConfig, TeacherConfig
from scicot_jax.teacher import prompts


def _records(run, key):
    return list(RationaleStore.open(run / f"teacher_{key}" / "store").records())


def test_d1_is_greedy_and_d4_sampled(tmp_path):
    cfg = PipelineConfig(
        task="synthetic_compass",
        out=str(tmp_path / "run"),
        methods=("finetune_cot:1", "finetune_cot:4"),
        limits={"train": 6, "validation": 2, "test": 2},
        student=StudentConfig(steps=1),
    )
    res = run_mod.Pipeline(cfg, FakeStudent(), log=lambda s: None).run()
    assert res["teacher"]["zero_shot_cot"]["temperature"] == 0.0
    assert res["teacher"]["zero_shot_cot_t0.7"]["temperature"] == 0.7
    assert "oracle" in res["teacher"]["zero_shot_cot"]["teacher"]
    run = tmp_path / "run"
    greedy = _records(run, "zero_shot_cot")
    sampled = _records(run, "zero_shot_cot_t0.7")
    assert len(greedy) == 6 and {r.temperature for r in greedy} == {0.0}
    assert len(sampled) == 24 and {r.temperature for r in sampled} == {0.7}
    # every split the teacher answered, over all samples, in percent
    assert set(res["teacher"]["zero_shot_cot_t0.7"]["accuracy_by_split"]) == {"train"}
    m = res["methods"]
    assert m["finetune_cot:1"]["teacher_accuracy"] == res["teacher"]["zero_shot_cot"]["accuracy"]
    assert (
        m["finetune_cot:4"]["teacher_accuracy"] == res["teacher"]["zero_shot_cot_t0.7"]["accuracy"]
    )


def _recording(path, examples, n):
    """A Fine-tune-CoT-format file with n distinct completions per question."""
    data = {}
    for i, ex in enumerate(examples):
        step1 = prompts.zero_shot_step1(ex)
        samples = []
        for k in range(n):
            reasoning = f" Reasoning number {k} about it."
            samples.append(
                {
                    "question": ex.question,
                    "answer": ex.answer,
                    "reasoning_prompt": step1,
                    "reasoning_completion": reasoning,
                    "prompt": prompts.zero_shot_step2(step1, reasoning),
                    "completion": f" {ex.answer if k % 2 == 0 else 'no'}.",
                }
            )
        data[str(i)] = samples
    path.write_text(json.dumps({"metadata": {}, "data": data}))
    return path


def _examples():
    return [Example(f"q{i}", f"Is {i} even?", "yes", ()) for i in (0, 2, 4)]


def test_replay_serves_distinct_recorded_samples(tmp_path):
    exs = _examples()
    rec = _recording(tmp_path / "D_x.json", exs, 3)
    t = TeacherConfig(backend="replay", model="replay", replay_path=str(rec))
    card = cards.load_card("ftcot_coin_flip")
    out = teacher_step.run(t, card, "zero_shot_cot", 3, exs, tmp_path / "t", temperature=0.7)
    recs = list(RationaleStore.open(tmp_path / "t" / "store").records())
    for ex in exs:
        mine = sorted((r.sample_index, r.rationale) for r in recs if r.example_id == ex.id)
        assert [r for _, r in mine] == [f"Reasoning number {k} about it." for k in range(3)]
    assert out["accuracy"] == pytest.approx(100 * 2 / 3, abs=0.01)  # samples 0, 2 right
    assert "replay of recorded completions" in out["teacher"]


def test_replay_refuses_more_samples_than_recorded(tmp_path):
    exs = _examples()
    rec = _recording(tmp_path / "D_x.json", exs, 1)
    t = TeacherConfig(backend="replay", model="replay", replay_path=str(rec))
    card = cards.load_card("ftcot_coin_flip")
    with pytest.raises(ValueError, match=r"question q0 has 1 recorded completion.*D = 2"):
        teacher_step.run(t, card, "zero_shot_cot", 2, exs, tmp_path / "t", temperature=0.7)


def test_validation_fraction_zero_means_no_carve_off(tmp_path):
    card = tmp_path / "nov.toml"
    card.write_text(
        cards.CARDS_DIR.joinpath("synthetic_compass.toml")
        .read_text()
        .replace('name = "synthetic_compass"', 'name = "nov"')
        .replace('validation = "validation"\n', "")
    )
    args = ["run", "--task", str(card), "--out", str(tmp_path / "r"), "--limits", "train=20"]
    cfg = cli.config_from_args(cli._parser().parse_args([*args, "--validation_fraction", "0"]))
    assert cfg.validation_fraction == 0
    res = run_mod.Pipeline(
        PipelineConfig(**{**cfg.__dict__, "methods": ("baseline",)}), FakeStudent()
    ).run()
    assert res["data"]["splits"]["train"] == 20 and res["data"]["splits"]["validation"] == 0
    assert res["methods"]["baseline"]["accuracy"]["validation"] is None


def test_missing_data_file_names_card_split_and_path(tmp_path, capsys):
    with pytest.raises(SystemExit) as e:
        cli.main(
            ["run", "--task", "arc_easy", "--data_dir", str(tmp_path), "--out", str(tmp_path / "o")]
        )
    msg = str(e.value)
    assert "task arc_easy, split train" in msg and str(tmp_path / "ARC-Easy-train.jsonl") in msg
    assert "\n" not in msg


def test_replay_run_names_its_teacher(tmp_path):
    args = ["run", "--task", "ftcot_svamp", "--out", str(tmp_path), "--teacher.backend", "replay"]
    args += ["--teacher.replay_path", str(tmp_path / "D_svamp.json")]
    cfg = cli.config_from_args(cli._parser().parse_args(args))
    assert cfg.teacher.model == "replay"
    assert teacher_step.describe(cfg.teacher).startswith("replay")
