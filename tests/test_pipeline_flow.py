"""Pipeline wiring with a stand-in student and teacher: steps, artifacts, results, resume."""

import json
from pathlib import Path

import pytest

from scicot_jax.data import cards, grading, synthetic
from scicot_jax.data.store import RationaleRecord, RationaleStore
from scicot_jax.pipeline import run as run_mod
from scicot_jax.pipeline import teacher_step
from scicot_jax.pipeline.config import MethodSpec, PipelineConfig, StudentConfig


def fake_teacher(t, card, prompt, samples, examples, out_dir, temperature=None, seed=0):
    """Writes the synthetic rationales; every 4th question's sample 0 is wrong."""
    store = RationaleStore.create(out_dir / "store", {"prompt": prompt, "samples": samples})
    for k, ex in enumerate(examples):
        for i in range(samples):
            wrong = k % 4 == 0 and i == 0
            rat = synthetic.write_rationale("mc_reasoning", ex, variant=i)
            store.append(
                RationaleRecord(
                    ex.id,
                    i,
                    rat,
                    "Z" if wrong else ex.answer,
                    not wrong,
                    "teacher:fake",
                    prompt,
                    0.7,
                    10,
                    20,
                )
            )
    return teacher_step.summarize_store(out_dir / "store")


class WordPairs(list):
    """Training pairs as a stand-in student prepares them: measured in words, one per row."""

    examples_per_row = 1.0

    @property
    def tokens_per_example(self) -> float:
        return sum(len(i.split()) + len(t.split()) + 2 for i, t in self) / max(1, len(self))


class FakeStudent:
    """Memorises its training pairs; unseen inputs get a fixed answer."""

    def __init__(self):
        self.calls = []
        self.scored = []

    def use_vocab(self, path):
        self.vocab = path  # works on raw text: no tokenizer to load

    def prepare(self, pairs):
        return WordPairs(pairs)

    def train(self, pairs, out_dir, *, stage, task, steps=None):
        self.calls.append(("train", stage, len(pairs)))
        (Path(out_dir) / "pairs.json").write_text(json.dumps(pairs))
        return {"checkpoint": str(out_dir), "train_tokens": 7 * len(pairs), "steps": steps or 1}

    def predict(self, checkpoint, inputs, *, stage, infer_input):
        self.calls.append(("predict", stage, len(inputs)))
        memory = dict(map(tuple, json.loads((Path(checkpoint) / "pairs.json").read_text())))
        return [memory.get(x, "Therefore, the answer is A.") for x in inputs]

    def score(self, checkpoint, pairs):
        self.calls.append(("score", "", len(pairs)))
        self.scored.append((checkpoint, [tuple(p) for p in pairs]))
        return [float(len(i) % 7) for i, _ in pairs]


def test_method_spec_parsing():
    assert MethodSpec.parse("finetune_cot+morsd:4") == MethodSpec("finetune_cot", 4, True)
    assert MethodSpec.parse("scicot").label == "scicot:1"
    assert MethodSpec.parse("scicot+morsd:2").slug == "scicot-morsd_d2"
    for bad in ("cot", "baseline:2", "scicot:0", "scicot+x:1", "scicot:two"):
        with pytest.raises(ValueError):
            MethodSpec.parse(bad)


def test_flow_results_and_resume(tmp_path, monkeypatch):
    monkeypatch.setattr(teacher_step, "run", fake_teacher)
    cfg = PipelineConfig(
        task="synthetic_mc",
        out=str(tmp_path / "run"),
        methods=("baseline", "finetune_cot:1", "finetune_cot:2", "scicot+morsd:2"),
        limits={"train": 12, "validation": 5, "test": 6},
        student=StudentConfig(steps=1),
    )
    student = FakeStudent()
    res = run_mod.Pipeline(cfg, student, log=lambda s: None).run()
    m = res["methods"]
    assert set(m) == {"baseline", "finetune_cot:1", "finetune_cot:2", "scicot+morsd:2"}
    assert m["finetune_cot:1"]["rationales_used"] == 9  # 12 questions, 3 wrong sample-0s
    assert m["finetune_cot:2"]["rationales_used"] == 21
    # D = 1 learns from the greedy run (one sample), D = 2 from the sampled one
    assert m["finetune_cot:1"]["teacher_accuracy"] == 75.0
    assert m["finetune_cot:2"]["teacher_accuracy"] == pytest.approx(100 * 21 / 24, abs=0.01)
    sel = m["scicot+morsd:2"]
    assert sel["selection"] == "morsd" and sel["rationales_used"] == 12  # 1 per question
    assert sel["selection_summary"]["scored"] is True
    assert sel["train_examples"] == 12  # Stage 2: every train question
    assert set(sel["stage1_rationale_answer_accuracy"]) == {"train", "validation", "test"}
    for v in m.values():
        assert set(v["accuracy"]) == {"validation", "test"}
    run = Path(cfg.out)
    # 4 methods in the compute table, 3 CoT methods in the rationales table, a header row each
    assert (run / "results.md").read_text().count("\n| ") == 4 + 1 + 3 + 1
    report = (run / "select_scicot-morsd_d2" / "report.md").read_text()
    assert "cross-fitted probes" in report and "| kept | 12 |" in report
    for label, v in m.items():  # every accuracy recomputes from its predictions file
        slug = MethodSpec.parse(label).slug
        for split in ("validation", "test"):
            rows = grading.read_predictions(run / f"eval_{slug}" / f"predictions_{split}.jsonl")
            assert len(rows) == cfg.limits[split] and {r["split"] for r in rows} == {split}
            assert grading.accuracy_from_predictions(rows)[split] == v["accuracy"][split]
            card = cards.load_card("synthetic_mc")
            kind = (
                "answer"
                if label == "baseline"
                else ("one_stage" if "finetune" in label else "answer")
            )
            regraded = grading.accuracy_from_predictions(rows, grading.grader_for(card, kind))
            assert regraded[split] == v["accuracy"][split]
    n_calls = len(student.calls)
    # MoRSD scored every correct rationale (D = 2) by cross-fitting: two probes, each
    # trained on one half of the questions, each scoring only the other half
    assert sum(n for kind, _, n in student.calls if kind == "score") == 21
    assert [c for c in student.calls if c[:2] == ("train", "scorer")].__len__() == 2
    assert len(student.scored) == 2
    for ckpt, pairs in student.scored:
        seen = {tuple(p) for p in json.loads((Path(ckpt) / "pairs.json").read_text())}
        assert pairs and not seen & set(pairs)
        questions = lambda ps: {i.split("\n")[0] for i, _ in ps}  # noqa: E731
        assert not questions(seen) & questions(pairs)
    compute = m["scicot+morsd:2"]
    assert compute["train_tokens"] > 0 and compute["train_steps"] > 0

    again = run_mod.Pipeline(cfg, student, log=lambda s: None).run()
    assert len(student.calls) == n_calls  # every step skipped
    assert again["methods"]["scicot+morsd:2"]["accuracy"] == sel["accuracy"]
    assert set(again["skipped_steps"]) == set(again["steps"])


def test_training_data_does_not_depend_on_teacher_completion_order(tmp_path, monkeypatch):
    """A teacher store holds records in the order requests completed (it varies with load);
    the vocabulary, the selection and every student's training pairs must not: an end-to-end
    demo and a separate run of one method gave different students from the same records."""

    def teacher_in_order(order):
        def run(t, card, prompt, samples, examples, out_dir, temperature=None, seed=0):
            fake_teacher(t, card, prompt, samples, examples, out_dir / "fake", temperature, seed)
            recs = list(RationaleStore.open(out_dir / "fake" / "store").records())
            store = RationaleStore.create(out_dir / "store", {"prompt": prompt})
            for r in order(recs):
                store.append(r)
            return teacher_step.summarize_store(out_dir / "store")

        return run

    pairs = {}
    for name, order in (("forward", list), ("reversed", lambda rs: rs[::-1])):
        monkeypatch.setattr(teacher_step, "run", teacher_in_order(order))
        cfg = PipelineConfig(
            task="synthetic_mc",
            out=str(tmp_path / name),
            methods=("finetune_cot:2", "scicot+morsd:2"),
            limits={"train": 12, "validation": 5, "test": 6},
            student=StudentConfig(steps=1),
        )
        run_mod.Pipeline(cfg, FakeStudent(), log=lambda s: None).run()
        run = Path(cfg.out)
        pairs[name] = {p.parent.name: p.read_text() for p in sorted(run.glob("*/pairs.json"))} | {
            "vocab": (run / "vocab" / "task.model").read_bytes()
        }
    assert len(pairs["forward"]) == 6  # Fine-tune-CoT, 2 probes, Sci-CoT's 2 stages; vocab
    assert pairs["forward"] == pairs["reversed"]


def test_morsd_with_a_pretrained_student_scores_directly(tmp_path, monkeypatch):
    """With --student.init_checkpoint the pretrained student scores RD itself (as in MoRSD): no probe
    students, every correct rationale scored once by that checkpoint, the lowest RD kept."""
    monkeypatch.setattr(teacher_step, "run", fake_teacher)
    init = tmp_path / "pretrained"
    init.mkdir()
    cfg = PipelineConfig(
        task="synthetic_mc",
        out=str(tmp_path / "run"),
        methods=("scicot+morsd:2",),
        limits={"train": 12, "validation": 5, "test": 6},
        student=StudentConfig(steps=1, init_checkpoint=str(init), vocab="t5"),
    )
    student = FakeStudent()
    res = run_mod.Pipeline(cfg, student, log=lambda s: None).run()
    assert not [c for c in student.calls if c[:2] == ("train", "scorer")]  # no probes
    assert [ckpt for ckpt, _ in student.scored] == [str(init)]
    scored = student.scored[0][1]
    assert len(scored) == len(set(scored)) == 21  # 12 questions x 2 samples, 3 wrong
    sel = res["methods"]["scicot+morsd:2"]
    assert sel["selection_summary"]["rd_source"] == "pretrained student"
    assert sel["rationales_used"] == 12
    run = Path(cfg.out)
    assert "from pretrained student" in (run / "select_scicot-morsd_d2" / "report.md").read_text()
    decisions = [
        json.loads(line)
        for line in (run / "select_scicot-morsd_d2" / "decisions.jsonl").read_text().splitlines()
    ]
    rd = {i: float(len(i) % 7) for i, _ in scored}  # FakeStudent.score
    assert sorted(d["rd"] for d in decisions if d["rd"] is not None) == sorted(rd.values())
    for q in {d["example_id"] for d in decisions}:
        mine = [d for d in decisions if d["example_id"] == q and d["rd"] is not None]
        kept = [d for d in mine if d["kept"]]
        assert len(kept) == 1 and kept[0]["rd"] == min(d["rd"] for d in mine)


def test_cli_flags_build_config(tmp_path):
    from scicot_jax.pipeline.cli import _parser, config_from_args

    args = _parser().parse_args(
        [
            "run",
            "--task",
            "synthetic_mc",
            "--out",
            str(tmp_path),
            "--methods",
            "baseline,scicot+morsd:4",
            "--limits",
            "train=10",
            "--source_overrides",
            "difficulty=2",
            "--teacher.backend",
            "oracle",
            "--teacher.oracle_error_rate",
            "0.1",
            "--student.size",
            "small",
            "--student.overrides",
            "d_model=96",
            "--student.steps",
            "7",
            "--selection.fraction",
            "0.5",
            "--student.gin",
            "BATCH_SIZE=8",
        ]
    )
    cfg = config_from_args(args)
    assert cfg.method_specs()[1] == MethodSpec("scicot", 4, True)
    assert cfg.limits == {"train": 10} and cfg.source_overrides == {"difficulty": 2}
    assert cfg.teacher.oracle_error_rate == 0.1 and cfg.student.overrides == {"d_model": 96}
    assert cfg.student.size == "small" and cfg.student.steps == 7
    assert cfg.selection.fraction == 0.5 and cfg.selection.per_question is None
    assert cfg.student.gin == ("BATCH_SIZE=8",)
    again = PipelineConfig.from_dict(json.loads(json.dumps(cfg.to_dict())))
    assert again == cfg
    with pytest.raises(ValueError, match="vocabulary"):
        StudentConfig(init_checkpoint="/ckpt")


def test_remote_init_checkpoint_is_staged_locally(tmp_path, monkeypatch):
    src = tmp_path / "bucket" / "flan"
    (src / "params" / "d").mkdir(parents=True)
    (src / "config.json").write_text("{}")
    (src / "params" / "d" / "w").write_text("1")
    seen = {}

    class Recorder(run_mod.Pipeline):
        def run(self):
            seen["init"] = self.cfg.student.init_checkpoint
            return {}

    monkeypatch.setattr(run_mod, "Pipeline", Recorder)
    cfg = PipelineConfig(
        task="synthetic_mc",
        out=str(tmp_path / "run"),
        student=StudentConfig(init_checkpoint=f"file://{src}", vocab="t5"),
    )
    run_mod.run_pipeline(cfg, FakeStudent(), log=lambda s: None)
    local = Path(seen["init"])
    assert local.is_relative_to(tmp_path / "run") and (local / "params/d/w").read_text() == "1"


def test_verbose_info_lines_reach_stderr_after_an_import_logged_a_warning(tmp_path):
    """`run_pipeline.py ... -v`: INFO lines reach stderr even when an import warned first (a
    bare basicConfig is then a no-op and leaves the root at WARNING)."""
    import os
    import subprocess
    import sys

    code = (
        "import logging, sys\n"
        "logging.warning('an import warned first')\n"
        "from scicot_jax.data.sources import SourceError\n"
        "from scicot_jax.pipeline import cli, run\n"
        "def fake(cfg, redo=()):\n"
        "    logging.getLogger('scicot_jax.pipeline').info('info line reached stderr')\n"
        "    raise SourceError('stop here')\n"
        "run.run_pipeline = fake\n"
        "cli.main(['run', '--task', 'synthetic_mc', '--out', sys.argv[1], '-v'])\n"
    )
    r = subprocess.run(
        [sys.executable, "-c", code, str(tmp_path / "run")],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "JAX_PLATFORMS": "cpu"},
    )
    assert "stop here" in r.stderr, r.stderr[-2000:]
    assert "info line reached stderr" in r.stderr, r.stderr[-2000:]


def test_truncated_predictions_redo_the_eval_and_a_moved_cache_keeps_the_teacher(
    tmp_path, monkeypatch
):
    """A damaged output of a finished step is redone (results.json recomputed, not the old
    accuracy kept); the teacher's --teacher.cache path is no input of its result."""
    from dataclasses import replace

    monkeypatch.setattr(teacher_step, "run", fake_teacher)
    cfg = PipelineConfig(
        task="synthetic_mc",
        out=str(tmp_path / "run"),
        methods=("baseline", "finetune_cot:1"),
        limits={"train": 8, "validation": 4, "test": 4},
        student=StudentConfig(steps=1),
    )
    first = run_mod.Pipeline(cfg, FakeStudent(), log=lambda s: None).run()
    preds = Path(cfg.out) / "eval_baseline" / "predictions_test.jsonl"
    whole = preds.read_text()
    preds.write_text(whole.splitlines(keepends=True)[0])  # truncated to one row
    logged = []
    again = run_mod.Pipeline(cfg, FakeStudent(), log=logged.append).run()
    assert any(x.startswith("[redo] eval_baseline:") and str(preds) in x for x in logged)
    assert "eval_baseline" not in again["skipped_steps"]
    assert preds.read_text() == whole
    recorded = json.loads((Path(cfg.out) / "results.json").read_text())["methods"]
    assert {k: v["accuracy"] for k, v in recorded.items()} == {
        k: v["accuracy"] for k, v in first["methods"].items()
    }

    moved = replace(cfg, teacher=replace(cfg.teacher, cache=str(tmp_path / "elsewhere.sqlite")))
    third = run_mod.Pipeline(moved, FakeStudent(), log=lambda s: None).run()
    assert any(s.startswith("teacher_") for s in third["steps"])
    assert set(third["skipped_steps"]) == set(third["steps"])
