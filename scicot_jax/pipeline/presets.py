"""The papers' own recipes as named presets (``run_pipeline.py run --preset NAME``).

A preset sets the budget shape and the methods a paper ran; every flag given beside it wins.
The comparisons the project's demo makes (``--match tokens`` / ``rationale_student``) are not
these recipes: a preset trains each student as its paper did, for real cards and pretrained
students.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from scicot_jax.pipeline.config import PipelineConfig


@dataclass(frozen=True)
class Preset:
    """A paper's recipe: the methods it ran and how long each stage trains."""

    methods: tuple[str, ...]
    match: str = "none"  # each stage to its own budget, no compute matching
    epochs: float | None = None  # epochs of each stage's own data (None: steps per stage)
    pretrained_scorer: bool = False  # RD scored by the pretrained student (init_checkpoint)
    doc: str = ""


PRESETS = {
    "finetune_cot": Preset(
        ("baseline", "finetune_cot:1"),
        epochs=20.0,
        doc="Fine-tune-CoT: the student trains 20 epochs of its own data whatever D (more "
        "rationales, more steps)",
    ),
    "scicot": Preset(
        ("baseline", "scicot:1"),
        doc="Sci-CoT: Stage 1 (question -> rationale) trains --student.steps, Stage 2 (question + "
        "rationale -> answer) --student.stage2_steps, each to its own budget (or "
        "--student.epochs of its data)",
    ),
    "morsd": Preset(
        ("baseline", "scicot+morsd:4"),
        pretrained_scorer=True,
        doc="MoRSD: the pretrained student (--student.init_checkpoint) scores rationale difficulty, no "
        "probes are trained; then Sci-CoT's two stages, each to its own budget",
    ),
}


def apply(cfg: PipelineConfig, name: str) -> PipelineConfig:
    """``cfg`` with preset ``name``'s methods and budget (flags are applied after it)."""
    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r}: use one of {sorted(PRESETS)}")
    p = PRESETS[name]
    return replace(
        cfg,
        preset=name,
        methods=p.methods,
        match=p.match,
        student=replace(cfg.student, epochs=p.epochs),
    )


def check(cfg: PipelineConfig) -> None:
    """A preset's requirements on the final config (after the flags), as one clear line."""
    p = PRESETS.get(cfg.preset or "")
    if p and p.pretrained_scorer and not cfg.student.init_checkpoint:
        raise ValueError(
            f"preset {cfg.preset}: the pretrained student scores RD; give --student.init_checkpoint"
        )
    if p and p.match != cfg.match:
        raise ValueError(
            f"preset {cfg.preset} trains each stage to its own budget; --match {cfg.match} "
            "is another comparison (drop --preset or --match)"
        )


def help_text() -> str:
    return "; ".join(f"{k}: {p.doc}" for k, p in PRESETS.items())
