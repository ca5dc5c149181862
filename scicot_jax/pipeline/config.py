"""Pipeline configuration: task, teacher, student, methods and selection, as plain dataclasses."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from scicot_jax.selection import SelectionConfig

METHODS = ("baseline", "finetune_cot", "scicot")
# Which teacher prompt each method learns from (Fine-tune-CoT: zero-shot CoT; Sci-CoT: the
# teacher sees the correct answer).
PROMPT_FOR = {"finetune_cot": "zero_shot_cot", "scicot": "answer_conditioned"}
# Prompts that give the teacher the answer: its "accuracy" is the answers given (100 %), not a
# teacher's skill; reports show its flawed-step rate beside it and plots draw no teacher line.
ANSWERS_GIVEN = ("answer_conditioned",)
TEACHER_BACKENDS = ("oracle", "replay", "gemini", "openai", "import")


@dataclass(frozen=True)
class MethodSpec:
    """One method to run: ``baseline``, ``finetune_cot:D``, ``scicot:D``, ``+morsd`` selection,
    or ``+random``: MoRSD's control, as many rationales per question chosen at random."""

    method: str
    degree: int = 0
    morsd: bool = False
    random: bool = False

    @classmethod
    def parse(cls, text: str) -> MethodSpec:
        """'finetune_cot+morsd:4' -> MethodSpec('finetune_cot', 4, True)."""
        name, _, d = text.strip().partition(":")
        base, _, sel = name.partition("+")
        if base not in METHODS:
            raise ValueError(
                f"unknown method {text!r}: use one of {METHODS}, e.g. 'finetune_cot:4'"
            )
        if sel not in ("", "morsd", "random"):
            raise ValueError(f"unknown selection {sel!r} in {text!r}: '+morsd' or '+random'")
        if base == "baseline":
            if d or sel:
                raise ValueError(f"{text!r}: baseline takes no degree or selection")
            return cls("baseline")
        try:
            degree = int(d) if d else 1
        except ValueError:
            raise ValueError(f"{text!r}: degree must be an integer, e.g. '{base}:4'") from None
        if degree < 1:
            raise ValueError(f"{text!r}: degree must be >= 1")
        return cls(base, degree, sel == "morsd", sel == "random")

    @property
    def label(self) -> str:
        if self.method == "baseline":
            return "baseline"
        sel = "+morsd" if self.morsd else "+random" if self.random else ""
        return f"{self.method}{sel}:{self.degree}"

    @property
    def slug(self) -> str:
        """Directory-safe label."""
        return self.label.replace("+", "-").replace(":", "_d")

    @property
    def prompt(self) -> str | None:
        return PROMPT_FOR.get(self.method)


@dataclass(frozen=True)
class TeacherConfig:
    """Where rationales come from."""

    backend: str = "oracle"  # oracle | replay | gemini | openai | import
    model: str = "oracle"
    base_url: str | None = None
    api: str = "openai"  # wire protocol spoken to the oracle: openai | gemini
    temperature: float | None = None  # None: 0 for D = 1, 0.7 for D > 1 (Fine-tune-CoT)
    cache: str | None = None  # SQLite request cache; default <run>/teacher/<prompt>/cache.sqlite
    importer: str | None = None  # backend=import: importer name (see pipeline.teacher_step)
    import_path: str | None = None  # backend=import: file or folder of recorded rationales
    replay_path: str | None = None  # backend=replay: recorded completions file
    oracle_error_rate: float = 0.0  # oracle: fraction of deliberately wrong rationales
    # oracle: a real teacher's failure modes, drawn per question (teacher.fakes.oracle_behaviour)
    oracle_step_error: float = 0.06  # zero-shot CoT: per-step chance a question is hard
    oracle_flawed_right: float = 0.05  # right answers with a flawed step
    oracle_rationalise: float = 0.3  # answer-conditioned, hard question: wrong-step rationale
    max_requests: int | None = None


@dataclass(frozen=True)
class StudentConfig:
    """The T5 student and how long to train it."""

    size: str = "tiny"  # T5Config preset
    overrides: dict = field(default_factory=dict)  # T5Config field overrides, e.g. {"d_model": 64}
    # SentencePiece path | "t5" (T5's, for pretrained checkpoints) | "task" (fitted to the run's
    # train texts: short sequences for students from scratch) | None (the demo vocabulary).
    vocab: str | None = "task"
    vocab_size: int = 1024  # for vocab="task"
    split_digits: bool = False  # for vocab="task": spell numbers digit by digit
    init_checkpoint: str | None = None  # orbax/HF-imported checkpoint to start from
    # Defaults from the demo's evidence (README, 'What make demo shows'): 1,600 steps of batch
    # 32 at a constant 3e-3 after 5 % warmup; a cosine decay to zero left students at chance.
    steps: int = 1600
    epochs: float | None = None  # instead of steps: epochs over the train questions
    stage2_steps: int | None = None  # default: steps
    scorer_steps: int | None = None  # MoRSD probe student; default: steps // 2
    batch_size: int = 32
    optimizer: str = "adamw"  # adamw (from scratch) | adafactor (T5 fine-tuning default)
    learning_rate: float = 3e-3
    weight_decay: float = 0.0
    schedule: str = "constant"  # constant | rsqrt | linear | cosine
    warmup_fraction: float = 0.05
    inputs_length: int | None = None  # default: the card's feature lengths
    targets_length: int | None = None
    trainer: str = "inprocess"  # inprocess (in-memory pairs) | gin (train binary, SeqIO task)
    gin: tuple[str, ...] = ()  # extra KEY=VALUE bindings for the gin trainer (t5x style)
    eval_batch_size: int = 64
    # Knobs both trainers take from here (pipeline.plan), whichever runs the stage:
    dropout_rate: float = 0.0
    clip_grad_norm: float | None = 1.0  # global-norm gradient clipping; None: off
    pack: bool = False  # pack several examples per row, best-fit (data.packing), either trainer
    # Packed rows' inputs + targets budget; their lengths are fitted to each stage's data.
    packed_row_tokens: int = 1024
    dtype: str = "auto"  # activations: float32 | bfloat16 | auto (float32 on CPU, else bf16)

    def __post_init__(self):
        if self.init_checkpoint and self.vocab in (None, "task"):
            raise ValueError(
                "a pretrained init_checkpoint needs the vocabulary it was trained "
                "with (e.g. --vocab t5), not a task/demo vocabulary"
            )
        if self.trainer not in ("inprocess", "gin"):
            raise ValueError(f"student trainer must be inprocess or gin, got {self.trainer!r}")


@dataclass(frozen=True)
class PipelineConfig:
    """A whole pipeline run."""

    task: str  # card name or path
    out: str
    methods: tuple[str, ...] = ("baseline", "finetune_cot:1", "scicot:1")
    data_dir: str | None = None
    source_overrides: dict = field(default_factory=dict)  # e.g. {"difficulty": 4} for synthetic
    limits: dict = field(default_factory=dict)  # split -> max examples read
    train_fraction: float = 1.0
    validation_fraction: float = 0.1  # carved from train when the card has no validation split
    eval_splits: tuple[str, ...] = ("validation", "test")
    # Compute-matched methods: equal train "tokens" or "steps" ("none": each stage its own
    # steps); see pipeline.budget.
    match: str = "tokens"
    teacher: TeacherConfig = TeacherConfig()
    student: StudentConfig = StudentConfig()
    selection: SelectionConfig = SelectionConfig(
        per_question=1
    )  # MoRSD: best rationale per question
    seed: int = 0  # one seed: data subsample, teacher samples and failures, student, selection
    preset: str | None = None  # the paper recipe applied (pipeline.presets), for the record

    def method_specs(self) -> list[MethodSpec]:
        specs = [MethodSpec.parse(m) for m in self.methods]
        labels = [s.label for s in specs]
        if len(set(labels)) != len(labels):
            raise ValueError(f"duplicate methods in {labels}")
        return specs

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> PipelineConfig:
        d = dict(d)
        d["teacher"] = TeacherConfig(**d.get("teacher", {}))
        st = dict(d.get("student", {}))
        st["gin"] = tuple(st.get("gin", ()))
        st.pop("seed", None)  # a config.json from before the run's seed was the student's too
        d["student"] = StudentConfig(**st)
        d["selection"] = SelectionConfig(**d.get("selection", {}))
        for k in ("methods", "eval_splits"):
            if k in d:
                d[k] = tuple(d[k])
        return cls(**d)

    def save(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(self.to_dict(), indent=2) + "\n")
