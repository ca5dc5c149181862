"""Pipeline configuration: task, teacher, student, methods and selection, as plain dataclasses."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, get_args

from scicot_jax.pipeline.budget import Match
from scicot_jax.selection import SelectionConfig

METHODS = ("baseline", "finetune_cot", "scicot")
# Which teacher prompt each method learns from (Fine-tune-CoT: zero-shot CoT; Sci-CoT: the
# teacher sees the correct answer).
PROMPT_FOR = {"finetune_cot": "zero_shot_cot", "scicot": "answer_conditioned"}
# Prompts that give the teacher the answer: its "accuracy" is the answers given (100 %), not a
# teacher's skill; reports show its flawed-step rate beside it and plots draw no teacher line.
ANSWERS_GIVEN = ("answer_conditioned",)
Backend = Literal["oracle", "replay", "gemini", "openai", "import"]
TEACHER_BACKENDS = get_args(Backend)


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

    backend: Backend = "oracle"  # where rationales come from (oracle: the loopback fake)
    # the teacher model's name (with replay or import and no name: the backend's)
    model: str = "oracle"
    base_url: str | None = None  # the provider's API address (gemini, openai)
    api: Literal["openai", "gemini"] = "openai"  # wire protocol spoken to the oracle
    temperature: float | None = None  # none: 0 for D = 1, 0.7 for D > 1 (Fine-tune-CoT)
    cache: str | None = None  # SQLite request cache; default <run>/teacher/<prompt>/cache.sqlite
    importer: str | None = None  # backend import: importer name (see pipeline.teacher_step)
    import_path: str | None = None  # backend import: file or folder of recorded rationales
    replay_path: str | None = None  # backend replay: recorded completions file
    oracle_error_rate: float = 0.0  # oracle: fraction of deliberately wrong rationales
    # oracle, a real teacher's failure mode (teacher.fakes.oracle_behaviour): zero-shot CoT's
    # per-step chance that a question is hard
    oracle_step_error: float = 0.06
    oracle_flawed_right: float = 0.05  # oracle: share of right answers with a flawed step
    # oracle, answer-conditioned prompt on a hard question: chance of a wrong-step rationale
    oracle_rationalise: float = 0.3
    max_requests: int | None = None  # stop the teacher after this many requests


@dataclass(frozen=True)
class StudentConfig:
    """The T5 student and how long to train it."""

    size: str = "tiny"  # T5Config preset: tiny, small, base, large, xl
    # T5Config field overrides, e.g. d_model=96 (repeatable)
    overrides: dict = field(default_factory=dict)
    # SentencePiece model (path, gs://) | t5 (T5's, for pretrained checkpoints) | task (fitted to
    # the run's train texts: short sequences for students from scratch) | none (the demo's)
    vocab: str | None = "task"
    vocab_size: int = 1024  # size of the task vocabulary (vocab task)
    split_digits: bool = False  # the task vocabulary spells numbers digit by digit
    init_checkpoint: str | None = None  # initial checkpoint (orbax, trainer or HF dir)
    # training budget in steps (see --match); the default is the demo's evidence (docs/demo.md):
    # 1,600 steps of batch 32 at a constant 3e-3 after 5 % warmup
    steps: int = 1600
    # training budget in epochs over the train questions, instead of steps (Fine-tune-CoT cards
    # default to the paper's 20; giving steps drops a configured epoch budget)
    epochs: float | None = None
    stage2_steps: int | None = None  # Sci-CoT Stage 2's own steps (default: steps)
    scorer_steps: int | None = None  # each MoRSD probe's own steps (default: steps / 2)
    batch_size: int = 32  # examples (packed: rows) per step, every stage
    # adamw (from scratch) or adafactor (the T5 fine-tuning default)
    optimizer: Literal["adamw", "adafactor"] = "adamw"
    learning_rate: float = 3e-3  # peak learning rate
    weight_decay: float = 0.0  # adamw: decoupled; adafactor: t5x's weight_decay_rate
    # after warmup_fraction of linear warmup (constant: a cosine decay to zero left the demo's
    # students at chance on some seeds)
    schedule: Literal["constant", "rsqrt", "linear", "cosine"] = "constant"
    warmup_fraction: float = 0.05  # share of each stage's steps warming up linearly
    inputs_length: int | None = None  # longest inputs in tokens (default: the card's)
    targets_length: int | None = None  # longest targets in tokens (default: the card's)
    # inprocess: numpy batches of in-memory pairs (small runs); gin: the train/infer binaries on
    # the SeqIO tasks
    trainer: Literal["inprocess", "gin"] = "inprocess"
    # gin bindings applied after the plan's (trainer gin), e.g. train.num_microbatches=2
    gin: tuple[str, ...] = ()
    eval_batch_size: int = 64  # examples per decoding batch in the eval steps
    dropout_rate: float = 0.0  # dropout rate while training, either trainer
    clip_grad_norm: float | None = 1.0  # global gradient-norm clip (none or 0: off)
    # pack several examples per row, best-fit, into lengths fitted to each stage's data
    pack: bool = False
    packed_row_tokens: int = 1024  # packed rows' inputs + targets budget
    # activations (auto: float32 on CPU, else bfloat16)
    dtype: Literal["auto", "float32", "bfloat16"] = "auto"

    def __post_init__(self):
        if self.clip_grad_norm == 0:  # "0: off" as the optimizer reads it, one value for it
            object.__setattr__(self, "clip_grad_norm", None)
        if self.init_checkpoint and self.vocab in (None, "task"):
            raise ValueError(
                "a pretrained init_checkpoint needs the vocabulary it was trained "
                "with (e.g. --student.vocab t5), not a task/demo vocabulary"
            )
        if self.trainer not in ("inprocess", "gin"):
            raise ValueError(f"student trainer must be inprocess or gin, got {self.trainer!r}")


@dataclass(frozen=True)
class PipelineConfig:
    """A whole pipeline run."""

    task: str  # task card name (see tasks/) or path to your own .toml card
    out: str  # run directory
    # comma list: baseline, finetune_cot:D, scicot:D, with optional +morsd (MoRSD selection) or
    # +random (its control), e.g. finetune_cot+morsd:4
    methods: tuple[str, ...] = ("baseline", "finetune_cot:1", "scicot:1")
    data_dir: str | None = None  # data folder for the card's source (TFDS, files)
    # a field of the card's [source], e.g. difficulty=4 (repeatable)
    source_overrides: dict = field(default_factory=dict)
    limits: dict = field(default_factory=dict)  # SPLIT=N: read at most N examples of SPLIT
    train_fraction: float = 1.0  # share of the train questions used
    # share of train carved off as validation when the card has no validation split (0: the
    # card's own validation split, or none)
    validation_fraction: float = 0.1
    eval_splits: tuple[str, ...] = ("validation", "test")  # splits each student is scored on
    # compute-matched methods: tokens (or steps): every method, MoRSD's probes included, trains
    # on as many tokens (or steps) as student.steps of plain fine-tuning; rationale_student:
    # every rationale-writing student (Fine-tune-CoT's, Sci-CoT's Stage 1) and the baseline
    # train student.steps (or epochs) each, Stage 2 and MoRSD's probes are overhead reported
    # beside it (student.stage2_steps, scorer_steps); none: each stage trains its own steps
    match: Match = "tokens"
    teacher: TeacherConfig = TeacherConfig()
    student: StudentConfig = StudentConfig()
    # MoRSD's selection (methods with +morsd): by default the best rationale per question
    selection: SelectionConfig = SelectionConfig(per_question=1)
    # one seed: data subsample, teacher samples and failures, student, selection
    seed: int = 0
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
