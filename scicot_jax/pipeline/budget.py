"""Training budgets: compute-matched comparisons of methods.

A method's compute is every student it trains: one stage (baseline, Fine-tune-CoT), two stages
(Sci-CoT), plus the MoRSD probes that score rationale difficulty. With ``match="tokens"`` (the
default) every method trains on the same number of tokens: as many as ``steps`` steps (or
``epochs`` epochs) of plain fine-tuning on the run's train questions, a reference every run has,
whatever its methods. ``match="steps"`` gives every method the same number of optimizer steps;
``match="none"`` trains each stage its own ``steps`` / ``stage2_steps`` / ``scorer_steps``
(or ``epochs`` of its own data, as in Fine-tune-CoT's recipe).

``match="rationale_student"`` is the papers' comparison: every rationale-writing student
(Fine-tune-CoT's one-stage student, Sci-CoT's Stage 1) and the baseline train the same
``steps`` (or ``epochs`` of the train questions) at the same batch size, so the same number of
rows (the same tokens when rows are packed to the same lengths); Sci-CoT's Stage 2 and MoRSD's
probes are overhead beside it, each trained its own ``stage2_steps`` / ``scorer_steps`` (or
``epochs`` of its own data) and reported apart.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal, get_args

Match = Literal["tokens", "steps", "none", "rationale_student"]
MATCH = get_args(Match)
# Stages that write rationales (or, for the baseline, answers) from the question alone: the
# students "rationale_student" gives equal budgets. Stage 2 and probes are overhead there.
WRITER_STAGES = ("baseline", "one_stage", "stage1")
# Share of a method's budget per stage. Sci-CoT: Stage 1 (long rationale targets) gets two
# thirds. MoRSD: the probes that score RD take a quarter, the method's stages the rest.
STAGE_SHARES = {
    "baseline": {"baseline": 1.0},
    "finetune_cot": {"one_stage": 1.0},
    "scicot": {"stage1": 2 / 3, "stage2": 1 / 3},
}
SCORER_SHARE = 0.25
# Published recipes by card source type: Fine-tune-CoT trains students for 20 epochs.
PAPER_EPOCHS = {"finetune_cot": 20.0}


@dataclass(frozen=True)
class Budget:
    """How many steps each stage of each method trains."""

    match: str
    steps: int  # reference: steps of plain fine-tuning (or of each stage with match="none")
    batch_size: int
    # Per batch row: one example, or the several a packed row holds.
    reference_tokens_per_row: float  # of the run's plain fine-tuning data
    epochs: float | None = None
    train_rows: float = 0  # rows in one epoch of the reference data (for epochs)

    def __post_init__(self):
        if self.match not in MATCH:
            raise ValueError(f"budget match must be one of {MATCH}, got {self.match!r}")

    @property
    def reference_steps(self) -> int:
        """Steps of plain fine-tuning the budget equals (epochs over the train questions)."""
        if self.epochs is not None:
            return max(1, math.ceil(self.epochs * self.train_rows / self.batch_size))
        return self.steps

    @property
    def tokens(self) -> float:
        """Train tokens every method gets (match="tokens")."""
        return self.reference_steps * self.batch_size * self.reference_tokens_per_row

    def share(self, method: str, stage: str, morsd: bool) -> float | None:
        """The fraction of the budget one stage of ``method`` gets (MoRSD probes: ``scorer``);
        None: an overhead stage trained to its own budget (match="rationale_student")."""
        if self.match == "rationale_student":
            return 1.0 if stage in WRITER_STAGES else None
        if stage == "scorer":
            return SCORER_SHARE
        share = STAGE_SHARES[method][stage]
        return share * (1 - SCORER_SHARE) if morsd else share

    def stage_steps(self, share: float | None, tokens_per_row: float, rows: float) -> int | None:
        """Steps for a stage with ``share`` of the budget (None: an overhead stage), on data of
        ``rows`` batch rows an epoch (None: the student's own configured steps)."""
        if self.match == "rationale_student" and share is not None:
            return self.reference_steps  # every writer: the same steps of the same batch
        if self.match == "steps":
            return max(1, round(share * self.reference_steps))
        if self.match == "tokens":
            return max(1, round(share * self.tokens / (self.batch_size * tokens_per_row)))
        if self.epochs is not None:  # the paper's recipe: epochs of each stage's own data
            return max(1, math.ceil(self.epochs * rows / self.batch_size))
        return None
