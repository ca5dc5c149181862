"""results.md: per-stage compute, the rationales each method learnt from, and an
answer-conditioned teacher's "accuracy" shown as what it is (answers given)."""

from scicot_jax.pipeline.results import render_markdown


def _results() -> dict:
    stages = {"student": {"steps": 1600, "train_tokens": 5_000_000, "train_flops": 1e15}}
    flaws = {
        "flawed_share_kept": 0.05,
        "flawed_share_candidates": 0.12,
        "rationalised_share_kept": 0.01,
        "rationalised_share_candidates": 0.06,
    }
    return {
        "task": "synthetic_compass",
        "run_dir": "runs/x",
        "wall_seconds": 10,
        "config": {"student": "tiny", "budget": {"match": "rationale_student", "steps": 1600}},
        "teacher": {
            "zero_shot_cot": {"teacher": "oracle", "accuracy": 75.7, "records": 600},
            "answer_conditioned": {"teacher": "oracle", "accuracy": 100.0, "records": 600},
        },
        "methods": {
            "baseline": {"method": "baseline", "accuracy": {"test": 30.0}, "stages": stages},
            "finetune_cot:1": {
                "method": "finetune_cot",
                "degree": 1,
                "rationales_used": 454,
                "teacher_accuracy": 75.7,
                "accuracy": {"test": 40.0},
                "stages": stages,
            },
            "scicot+morsd:4": {
                "method": "scicot",
                "degree": 4,
                "selection": "morsd",
                "rationales_used": 600,
                "teacher_accuracy": 100.0,
                "selection_summary": {"flaws": flaws},
                "stage1_rationale_answer_accuracy": {"train": 91.5, "test": 62.0},
                "accuracy": {"test": 55.0},
                "stages": {
                    **stages,
                    "stage2": {"steps": 400, "train_tokens": 900_000, "train_flops": 1e14},
                    "probes": {"steps": 1600, "train_tokens": 2_000_000, "train_flops": 4e14},
                },
                "train_tokens": 7_900_000,
            },
        },
    }


def test_results_md_rationales_and_answers_given():
    md = render_markdown(_results())
    assert "accuracy 75.7% over all samples" in md  # the zero-shot teacher's skill
    assert "accuracy 100.0%" not in md and "answers given (the prompt holds the answer" in md
    morsd = [line for line in md.splitlines() if line.startswith("| scicot+morsd:4 | 600 |")]
    assert morsd == ["| scicot+morsd:4 | 600 | 5.0 | 1.0 | 12.0 | answers given | 91.5 | 62.0 |"]
    assert "| finetune_cot:1 | 454 |  |  |  | 75.7 |  |  |" in md  # no flaw labels: blank
    # per stage: Stage 1 1600 steps, Stage 2 and probes in their own columns, totals beside
    (compute,) = [line for line in md.splitlines() if line.startswith("| scicot+morsd:4 | 4 |")]
    assert (
        "| 1600 | 5,000,000 | 1.00e+15 | 400 | 900,000 | 1.00e+14 | 1600 | 2,000,000 | 4.00e+14 "
        "| 7,900,000 |"
    ) in compute
    assert "match rationale_student" in md and "train 1600 steps each" in md
