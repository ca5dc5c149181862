"""A small pipeline-shaped run directory for the review app's tests, written by the project's
own writers (rationale store, MoRSD selection report, results.json, predictions, metrics) in
well under a second: a teacher store with wrong answers and one hostile rationale, a selection
with RDs and near-duplicates, two methods' predictions and curves, and a PNG plot."""

from __future__ import annotations

import json
import struct
import zlib
from pathlib import Path

from scicot_jax.data import synthetic
from scicot_jax.data.store import RationaleRecord, RationaleStore
from scicot_jax.files import write_jsonl
from scicot_jax.pipeline import results as results_mod
from scicot_jax.selection import SelectionConfig, select, write_report

TEACHER = "teacher_zero_shot_cot_t0.7"
STORE = f"{TEACHER}/store"
HOSTILE = (
    '<script>window.__xss = 1</script><b id="bold">not bold</b>'
    '<img src="x" onerror="window.__xss = 2"> &amp; done. '
    + "A very long line of reasoning " * 400
    + "Therefore, the answer is A."
)
N_QUESTIONS = 10
SAMPLES = 2


def png(width: int = 60, height: int = 30) -> bytes:
    """A small valid PNG (a red-to-blue gradient), written without an imaging library."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (
            struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
        )

    raw = b"".join(
        b"\x00"
        + b"".join(bytes((255 * x // width, 64, 255 - 255 * x // width)) for x in range(width))
        for _ in range(height)
    )
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(raw))
        + chunk(b"IEND", b"")
    )


def records(examples):
    """Sample 0 of every third question is wrong; sample 1 repeats sample 0 (a near-duplicate)
    except on question 1, whose sample 1 is the hostile text."""
    out = []
    for k, ex in enumerate(examples):
        for i in range(SAMPLES):
            wrong = k % 3 == 0 and i == 0
            text = synthetic.write_rationale("mc_reasoning", ex, variant=0)
            if k == 1 and i == 1:
                text = HOSTILE
            answer = "A" if k == 1 and i == 1 else ("Z" if wrong else ex.answer)
            out.append(
                RationaleRecord(
                    ex.id,
                    i,
                    text,
                    answer,
                    answer == ex.answer,
                    "teacher:oracle",
                    "zero_shot_cot",
                    0.7,
                    100 + k,
                    30 + i,
                )
            )
    return out


def build(root: Path) -> Path:
    """Write the run under root/run; returns its path."""
    run = root / "run"
    examples = synthetic.generate("mc_reasoning", "train", n=N_QUESTIONS)
    test = synthetic.generate("mc_reasoning", "test", n=6)
    recs = records(examples)
    store = RationaleStore.create(
        run / STORE,
        {
            "kind": "teacher",
            "card": "synthetic_mc",
            "answer_type": "multiple_choice",
            "compat": None,
            "prompt": "zero_shot_cot",
            "samples": SAMPLES,
            "temperature": 0.7,
        },
    )
    store.write_examples(examples)
    store.extend(recs)
    store.close()

    by_id = {ex.id: ex for ex in examples}
    sel = select(
        recs,
        by_id,
        SelectionConfig(per_question=1, max_degree=SAMPLES),
        scorer=lambda pairs: [0.5 + (len(q) % 17) / 10 + len(a) / 100 for q, a in pairs],
    )
    sel_dir = run / "select_scicot-morsd_d2"
    write_report(sel, sel_dir, title="MoRSD selection (cross-fitted probes)")
    kept = RationaleStore.create(
        sel_dir / "store", {"card": "synthetic_mc", "source": f"selection of {TEACHER}"}
    )
    kept.write_examples(examples)
    kept.extend(sel.kept)
    kept.close()

    for method, acc in (("baseline", 0.3), ("scicot-morsd_d2", 0.6)):
        rows = []
        for j, ex in enumerate(test):
            right = j < acc * len(test)
            said = ex.answer if right else ("A" if ex.answer != "A" else "B")
            rows.append(
                {
                    "id": ex.id,
                    "split": "test",
                    "input": ex.question,
                    "output": f"Step by step for {method}. Therefore, the answer is {said}.",
                    "parsed": said,
                    "gold": ex.answer,
                    "correct": right,
                }
            )
        write_jsonl(run / f"eval_{method}" / "predictions_test.jsonl", rows)
    for step_dir, n in (("train_baseline", 6), ("stage1_scicot-morsd_d2", 4)):
        write_jsonl(
            run / step_dir / "train" / "metrics.jsonl",
            ({"step": s, "loss": 5.0 / s, "accuracy": 0.1 * s} for s in range(1, n + 1)),
        )
    (run / "plots").mkdir()
    (run / "plots" / "accuracy_by_method.png").write_bytes(png())

    results_mod.write(
        run,
        {
            "task": "synthetic_mc",
            "run_dir": str(run),
            "wall_seconds": 12.5,
            "config": {
                "student": "tiny",
                "budget": {"match": "tokens", "tokens": 1000, "steps": 6},
            },
            "teacher": {
                "zero_shot_cot_t0.7": {
                    "teacher": "teacher:oracle",
                    "temperature": 0.7,
                    "records": len(recs),
                    "questions": N_QUESTIONS,
                    "accuracy": 80.0,
                    "input_tokens": 1045,
                    "output_tokens": 610,
                },
            },
            "methods": {
                "baseline": {
                    "accuracy": {"validation": 25.0, "test": 33.3},
                    "train_steps": 6,
                    "train_tokens": 763,
                    "train_flops": 6.3e8,
                    "seconds": 4.0,
                },
                "scicot+morsd:2": {
                    "accuracy": {"validation": 50.0, "test": 66.7},
                    "degree": 2,
                    "selection": "morsd",
                    "rationales_used": len(sel.kept),
                    "train_steps": 6,
                    "train_tokens": 990,
                    "train_flops": 9.1e8,
                    "seconds": 9.0,
                    # per-stage compute as results.json has it (shown generically: no code per field)
                    "stages": {
                        "student": {"steps": 4, "train_tokens": 600, "train_flops": 5.5e8},
                        "stage2": {"steps": 2, "train_tokens": 390, "train_flops": 3.6e8},
                    },
                },
            },
        },
    )
    return run


if __name__ == "__main__":  # python tests/review_run.py OUT: a run to look at by hand
    import sys

    print(json.dumps({"run": str(build(Path(sys.argv[1])))}))
