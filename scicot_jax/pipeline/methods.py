"""The methods as small objects the Pipeline runs (``Method.run(pipeline) -> Outcome``).

  Baseline       one student: question -> answer
  FinetuneCoT    one student: question -> rationale and answer, on selected teacher rationales
  SciCoT         Stage 1: question -> rationale; Stage 2: question + the Stage-1 student's
                 rationale -> answer

How a CoT method chooses the teacher's rationales is a ``Selection``: ``AllCorrect`` (every
correct sample up to degree D, the methods as published), ``MoRSD`` (the lowest rationale
difficulty per question, near-duplicates removed), ``RandomControl`` (MoRSD's control: as many
per question, drawn at random).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from scicot_jax.data import formats, grading
from scicot_jax.data.examples import Example
from scicot_jax.data.store import RationaleRecord, RationaleStore
from scicot_jax.pipeline import step_names
from scicot_jax.pipeline.config import MethodSpec
from scicot_jax.pipeline.results import compute_of
from scicot_jax.selection import SelectionConfig, select, write_report
from scicot_jax.selection.difficulty import rd_pair

if TYPE_CHECKING:
    from scicot_jax.pipeline.run import Pipeline


@dataclass(frozen=True)
class Outcome:
    """What a method's steps produced: its own results.json fields (in order), the students it
    trained by compute stage (``results.STAGES``), and its evaluation step's result."""

    fields: dict[str, Any]
    students: dict[str, dict]
    evaluation: dict


def question_half(example_id: str) -> int:
    """0 or 1: which half of the train questions an example falls in (MoRSD cross-fitting)."""
    return hashlib.sha256(example_id.encode()).digest()[0] % 2


# ---------------------------------------------------------------------- selections
class AllCorrect:
    """Fine-tune-CoT / Sci-CoT as published: every correct sample up to degree D."""

    name = "none"  # results.json's "selection"

    def config(self, p: Pipeline, degree: int) -> SelectionConfig:
        return SelectionConfig(dedupe=False, use_difficulty=False, max_degree=degree)

    def scorer(
        self, p: Pipeline, key: str, degree: int, cfg: SelectionConfig
    ) -> tuple[Callable | None, list[dict], str | None]:
        """(RD scorer of stage-2 pairs or None, the probe students it trained, how RD is
        measured)."""
        return None, [], None

    def run(self, p: Pipeline, spec: MethodSpec) -> dict:
        """The select step: the kept records as a rationale-store run, a report, a summary."""
        cfg = self.config(p, spec.degree)
        key = p.prompt_of(spec)
        name = step_names.select(spec.slug)

        def work(d: Path) -> dict:
            scorer, probes, rd_source = self.scorer(p, key, spec.degree, cfg)
            sel = select(p.teacher_records(key), p.by_id("train"), cfg, scorer, flaw_fn=p.flaw_fn())
            sel.summary["rd_source"] = rd_source
            # A rationale-store run of the kept records: what the SeqIO registry turns into
            # one_stage / stage1 tasks (scicot_jax.tasks.register_run_dir).
            p.new_store(
                d / "store",
                name,
                {
                    "source": f"selection of {step_names.teacher(key)}",
                    "samples_per_example": spec.degree,
                    "selection": asdict(cfg),
                },
                sel.kept,
            )
            write_report(sel, d, title=f"Rationale selection for {spec.label}")
            return {
                "kept": len(sel.kept),
                "summary": sel.summary,
                "scorer_compute": compute_of(probes),
            }

        return p.steps.run(name, work, inputs={"selection": cfg.__dict__, "budget": p.budget_key()})


class RandomControl(AllCorrect):
    """MoRSD's control: as many rationales per question, drawn at random."""

    name = "random"

    def config(self, p: Pipeline, degree: int) -> SelectionConfig:
        return replace(
            p.cfg.selection,
            max_degree=degree,
            use_difficulty=False,
            random_order=True,
            seed=p.cfg.seed,
        )


class MoRSD(AllCorrect):
    """The run's selection settings, ranked by rationale difficulty (RD)."""

    name = "morsd"

    def config(self, p: Pipeline, degree: int) -> SelectionConfig:
        return replace(p.cfg.selection, max_degree=degree)

    def scorer(
        self, p: Pipeline, key: str, degree: int, cfg: SelectionConfig
    ) -> tuple[Callable | None, list[dict], str | None]:
        """With an initial checkpoint, the pretrained student scores directly (as in MoRSD);
        otherwise two probes cross-fit: each scores the questions it was not trained on."""
        if not cfg.use_difficulty:
            return None, [], None
        init = p.cfg.student.init_checkpoint
        if init:
            return (lambda pairs: p.student.score(init, pairs)), [], "pretrained student"
        probes = [self.probe(p, key, degree, h) for h in (0, 1)]
        train = p.by_id("train")
        half_of = {
            rd_pair(train[r.example_id], r.rationale): question_half(r.example_id)
            for r in p.teacher_records(key)
        }

        def score(pairs: Sequence[tuple[str, str]]) -> list[float]:
            out: list[float] = [0.0] * len(pairs)
            for h, probe in enumerate(probes):
                idx = [i for i, pair in enumerate(pairs) if half_of[pair] != h]  # the other half
                for i, rd in zip(
                    idx, p.student.score(probe["checkpoint"], [pairs[i] for i in idx])
                ):
                    out[i] = rd
            return out

        return (
            score,
            probes,
            (
                "cross-fitted probes (each scores the half it did not train on), trained and scoring "
                "with the rationale's answer statement removed"
            ),
        )

    def probe(self, p: Pipeline, key: str, degree: int, half: int) -> dict:
        """A probe Stage-2 student trained on the correct rationales of one half of the train
        questions; it scores the other half (cross-fitting: no rationale is scored by a student
        that saw it)."""
        name = step_names.probe(half, key, degree)

        def work(d: Path) -> dict:
            recs = [
                r
                for r in p.teacher_records(key)
                if r.correct and r.sample_index < degree and question_half(r.example_id) == half
            ]
            train = p.by_id("train")
            p.new_store(
                d / "store",
                name,
                {
                    "source": f"half {half} of {step_names.teacher(key)}",
                    "samples_per_example": degree,
                },
                recs,
            )
            share = p.budget().share("scicot", "scorer", True)
            return p.train_stage(
                d,
                [rd_pair(train[r.example_id], r.rationale) for r in recs],
                "scorer",
                None if share is None else share / 2,  # two probes share the probes' budget
                lambda vocab: p.seqio_task("stage2", vocab, d / "store", degree),
            )

        return p.steps.run(name, work, inputs={**p.student_inputs(), "degree": degree})


SELECTIONS = {"none": AllCorrect, "morsd": MoRSD, "random": RandomControl}


# ---------------------------------------------------------------------- methods
def _question(split: str, ex: Example) -> str:
    return formats.render_question(ex)


class Method:
    """One method of a run: ``run`` trains its students and evaluates them in the pipeline's
    steps; ``selection_name`` is results.json's "selection"."""

    selection_name = "none"

    def __init__(self, spec: MethodSpec):
        self.spec = spec

    def run(self, p: Pipeline) -> Outcome:
        raise NotImplementedError


class Baseline(Method):
    """Plain fine-tuning: question -> answer."""

    def run(self, p: Pipeline) -> Outcome:
        slug = self.spec.slug
        tr = p.train_step(
            step_names.train(slug),
            p.reference_pairs,  # the budget's reference: tokenized once for both
            "baseline",
            lambda vocab: p.seqio_task("baseline", vocab),
            self.spec,
        )
        ev = p.evaluate(slug, tr["checkpoint"], "baseline", _question)
        fields = {"rationales_used": 0, "train_examples": tr["train_examples"]}
        return Outcome(fields, {"student": tr}, ev)


class CoTMethod(Method):
    """A method that learns from selected teacher rationales."""

    def __init__(self, spec: MethodSpec):
        super().__init__(spec)
        self.selection = SELECTIONS[
            "morsd" if spec.morsd else "random" if spec.random else "none"
        ]()
        self.selection_name = self.selection.name

    def run(self, p: Pipeline) -> Outcome:
        sel = self.selection.run(p, self.spec)
        fields = {"rationales_used": sel["kept"], "selection_summary": sel["summary"]}
        store = p.steps.step_dir(step_names.select(self.spec.slug)) / "store"
        more, students, ev = self.students(p, store)
        return Outcome(
            {**fields, **more}, {"probes": sel.get("scorer_compute") or {}, **students}, ev
        )

    def students(self, p: Pipeline, selected: Path) -> tuple[dict, dict[str, dict], dict]:
        """Train on the selected rationales (the store ``selected``) and evaluate: (results
        fields, students by compute stage, evaluation)."""
        raise NotImplementedError

    def selected(self, p: Pipeline) -> list[tuple[Example, str]]:
        """(train question, kept rationale), in the select step's order."""
        train = p.by_id("train")
        store = RationaleStore.open(p.steps.step_dir(step_names.select(self.spec.slug)) / "store")
        return [(train[r.example_id], r.rationale) for r in store.records()]


class FinetuneCoT(CoTMethod):
    """One student: question -> rationale, then the answer."""

    def students(self, p: Pipeline, selected: Path) -> tuple[dict, dict[str, dict], dict]:
        slug = self.spec.slug
        tr = p.train_step(
            step_names.train(slug),
            lambda: [formats.one_stage(ex, r) for ex, r in self.selected(p)],
            "one_stage",
            lambda vocab: p.seqio_task("one_stage", vocab, selected),
            self.spec,
        )
        ev = p.evaluate(slug, tr["checkpoint"], "one_stage", _question)
        return {"train_examples": tr["train_examples"]}, {"student": tr}, ev


class SciCoT(CoTMethod):
    """Two students: Stage 1 writes a rationale, Stage 2 answers from question and rationale."""

    def students(self, p: Pipeline, selected: Path) -> tuple[dict, dict[str, dict], dict]:
        slug = self.spec.slug
        s1 = p.train_step(
            step_names.stage1(slug),
            lambda: [formats.stage1(ex, r) for ex, r in self.selected(p)],
            "stage1",
            lambda vocab: p.seqio_task("stage1", vocab, selected),
            self.spec,
        )
        rat = self.write_rationales(p, s1["checkpoint"])
        rat_store = p.steps.step_dir(step_names.rationales(slug)) / "store"
        written = {
            (r.split, r.example_id): r.rationale for r in RationaleStore.open(rat_store).records()
        }
        s2 = p.train_step(
            step_names.stage2(slug),
            lambda: [formats.stage2(ex, written["train", ex.id]) for ex in p.examples("train")],
            "stage2",
            lambda vocab: p.seqio_task("stage2", vocab, rat_store),
            self.spec,
        )
        ev = p.evaluate(
            slug,
            s2["checkpoint"],
            "stage2",
            lambda split, ex: formats.stage2(ex, written[split, ex.id])[0],
        )
        fields = {
            "train_examples": s2["train_examples"],
            "stage1_rationale_answer_accuracy": rat["rationale_answer_accuracy"],
        }
        return fields, {"student": s1, "stage2": s2}, ev

    def write_rationales(self, p: Pipeline, ckpt: str) -> dict:
        """The Stage-1 student writes a rationale for every question of every split."""
        name = step_names.rationales(self.spec.slug)

        def work(d: Path) -> dict:
            grader = grading.grader_for(p.card, "rationale")
            acc, records, rows = {}, [], []
            for split in ("train", *p.cfg.eval_splits):
                exs = p.examples(split)
                inputs = [formats.render_question(ex) for ex in exs]
                outs = p.student.predict(
                    ckpt, inputs, stage="stage1", infer_input=d / "infer" / f"{split}.jsonl"
                )
                graded = grading.grade_outputs(grader, split, exs, inputs, outs)
                for ex, row in zip(exs, graded):
                    records.append(
                        RationaleRecord(
                            ex.id,
                            0,
                            row["output"],
                            row["parsed"],
                            row["correct"],
                            f"student:{ckpt}",
                            "stage1",
                            0.0,
                            split=split,
                        )
                    )
                rows += graded
                acc[split] = grading.percent(sum(r["correct"] for r in graded), len(graded))
            grading.write_predictions(d / "predictions.jsonl", rows)
            p.new_store(
                d / "store",
                name,
                {"source": f"student:{ckpt}", "prompt_kind": "stage1", "samples_per_example": 1},
                records,
            )
            return {"rationale_answer_accuracy": acc}

        return p.steps.run(name, work, inputs={"checkpoint": ckpt})


METHODS = {"baseline": Baseline, "finetune_cot": FinetuneCoT, "scicot": SciCoT}


def for_spec(spec: MethodSpec) -> Method:
    """The method object that runs ``spec``."""
    return METHODS[spec.method](spec)
