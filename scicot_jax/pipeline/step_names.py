"""Names of the step directories inside a run directory: the one place that spells them.

  data/                       train/validation/test.jsonl
  init_checkpoint/            a gs:// initial checkpoint, copied once
  teacher_<prompt>/           rationale-store run of the teacher (or of an import)
  vocab/                      the run's SentencePiece vocabulary (vocab="task")
  probe<h>_<prompt>_d<D>/     MoRSD: the two cross-fitted students that score rationale difficulty
  select_<method>/            selected.jsonl + decisions.jsonl, summary.json, report.md
  train_<method>/             checkpoint of a one-stage student (baseline, finetune_cot)
  stage1_<method>/            Sci-CoT Stage-1 student (question -> rationale)
  rationales_<method>/        rationale-store run written by the Stage-1 student, all splits
  stage2_<method>/            Sci-CoT Stage-2 student (question + rationale -> answer)
  eval_<method>/              predictions_<split>.jsonl and accuracy
  logs/                       <part>.log of each worker process (pipeline.arms; not a step)

<method> is the method's slug (``MethodSpec.slug``, e.g. ``scicot-morsd_d4``).
"""

from __future__ import annotations

DATA = "data"
INIT_CHECKPOINT = "init_checkpoint"
VOCAB = "vocab"


def teacher(key: str) -> str:
    return f"teacher_{key}"


def probe(half: int, key: str, degree: int) -> str:
    return f"probe{half}_{key}_d{degree}"


def select(slug: str) -> str:
    return f"select_{slug}"


def train(slug: str) -> str:
    return f"train_{slug}"


def stage1(slug: str) -> str:
    return f"stage1_{slug}"


def rationales(slug: str) -> str:
    return f"rationales_{slug}"


def stage2(slug: str) -> str:
    return f"stage2_{slug}"


def evaluation(slug: str) -> str:
    return f"eval_{slug}"
