"""The pipeline: data -> teacher -> selection -> students -> evaluation, as resumable steps.

Step directories inside the run directory (each finished step has a DONE.json and is skipped
when the pipeline runs again):

  data/                       train/validation/test.jsonl
  teacher_<prompt>/           rationale-store run of the teacher (or of an import)
  scorer_<prompt>/            MoRSD: the student that scores rationale difficulty (RD)
  select_<method>/            selected.jsonl + decisions.jsonl, summary.json, report.md
  train_<method>/             checkpoint of a one-stage student (baseline, finetune_cot)
  stage1_<method>/            Sci-CoT Stage-1 student (question -> rationale)
  rationales_<method>/        rationale-store run written by the Stage-1 student, all splits
  stage2_<method>/            Sci-CoT Stage-2 student (question + rationale -> answer)
  eval_<method>/              predictions_<split>.jsonl and accuracy

rationales_* and eval_* decode through the infer binary's files: infer/<split>.jsonl in,
infer/<split>-predict.jsonl-<shard>-of-<n> out (pipeline.infer_files).
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any, Protocol

from scicot_jax.data import formats, grading
from scicot_jax.data.examples import Example
from scicot_jax.pipeline import data_step, plan, results
from scicot_jax.pipeline.budget import Budget
from scicot_jax.pipeline.config import MethodSpec, PipelineConfig
from scicot_jax.pipeline.steps import StepRunner
from scicot_jax.selection import SelectionConfig, select, write_report
from scicot_jax.selection.difficulty import rd_pair


class Student(Protocol):
    """What the pipeline needs from a student trainer (see ``pipeline.student``)."""

    def use_vocab(self, path: str | Path) -> None:
        """Tokenize with the SentencePiece model at ``path`` (the run's task vocabulary)."""

    def train(
        self,
        pairs: Sequence[tuple[str, str]],
        out_dir: Path,
        *,
        stage: str,
        task: Callable[[str | None], str],
        steps: int | None = None,
    ) -> dict:
        """Train on (inputs, targets) texts, the data ``task(vocabulary)`` registers as a SeqIO
        task and names; returns at least {"checkpoint", "train_tokens"}."""

    def predict(
        self, checkpoint: str, inputs: Sequence[str], *, stage: str, infer_input: Path
    ) -> list[str]:
        """Greedy outputs, one per input (the T5 student goes through the infer binary's files:
        `infer_input` holds the inputs, its directory infer's outputs)."""

    def score(self, checkpoint: str, pairs: Sequence[tuple[str, str]]) -> list[float]:
        """Mean token negative log-likelihood of each target given its input."""


class Pipeline:
    """One run: ``Pipeline(cfg, student).run()`` -> results dict (also results.json/.md)."""

    def __init__(
        self,
        cfg: PipelineConfig,
        student: Student,
        card: Any = None,
        log: Callable[[str], None] = print,
        redo: tuple[str, ...] = (),
        after_step: Callable[[], None] | None = None,
    ):
        from scicot_jax.data import cards

        self.cfg = cfg
        card = card if card is not None else cards.load_card(cfg.task)
        if cfg.source_overrides:
            card = replace(card, source={**card.source, **cfg.source_overrides})
        self.card = card
        self.student = student
        self.log = log
        self.run_dir = Path(cfg.out)
        self.steps = StepRunner(self.run_dir, log=log, redo=redo, after_step=after_step)
        self.specs = cfg.method_specs()
        self._examples: dict[str, list[Example]] = {}

    # ------------------------------------------------------------------ data and teacher
    def examples(self, split: str) -> list[Example]:
        if split not in self._examples:
            self._examples[split] = data_step.load(self.steps.step_dir("data"), split)
        return self._examples[split]

    def by_id(self, split: str) -> dict[str, Example]:
        return {ex.id: ex for ex in self.examples(split)}

    def _data(self) -> dict:
        c = self.cfg
        return self.steps.run(
            "data",
            lambda d: data_step.prepare(
                self.card,
                d,
                data_dir=c.data_dir,
                limits=c.limits,
                train_fraction=c.train_fraction,
                validation_fraction=c.validation_fraction,
                seed=c.seed,
            ),
            inputs={
                "task": c.task,
                "source": c.source_overrides,
                "limits": c.limits,
                "train_fraction": c.train_fraction,
                "validation_fraction": c.validation_fraction,
                "seed": c.seed,
            },
        )

    def _teacher(self, key: str, samples: int) -> dict:
        from scicot_jax.pipeline import teacher_step

        t = self.cfg.teacher
        prompt, temperature = self.teacher_runs()[key]
        return self.steps.run_on_process_zero(  # on a pod the teacher is called (billed) once
            f"teacher_{key}",
            lambda d: teacher_step.run(
                t, self.card, prompt, samples, self.examples("train"), d, temperature, self.cfg.seed
            ),
            inputs={
                "teacher": teacher_step.result_inputs(t),
                "prompt": prompt,
                "temperature": temperature,
                "samples": samples,
                "seed": self.cfg.seed,
                "train": [ex.id for ex in self.examples("train")],
            },
        )

    def teacher_temperature(self, spec: MethodSpec) -> float:
        """D = 1: greedy, D > 1: sampled at 0.7 (Fine-tune-CoT), unless --temperature is set."""
        from scicot_jax.pipeline import teacher_step

        t = self.cfg.teacher.temperature
        return teacher_step.default_temperature(spec.degree) if t is None else t

    def prompt_of(self, spec: MethodSpec) -> str:
        """The teacher run a method learns from: its prompt, and the temperature if sampled
        (a D = 1 method learns from the greedy run); one shared run for imports."""
        if self.cfg.teacher.backend == "import":
            return "import"
        temperature = self.teacher_temperature(spec)
        return spec.prompt if temperature == 0 else f"{spec.prompt}_t{temperature:g}"

    def teacher_runs(self) -> dict[str, tuple[str | None, float | None]]:
        """Teacher run key -> (prompt, temperature) over the run's methods."""
        return {
            self.prompt_of(s): (s.prompt, self.teacher_temperature(s))
            for s in self.specs
            if s.prompt
        }

    def teacher_records(self, prompt: str) -> list:
        """The teacher's records of the train questions, in question order, then sample index.

        A teacher store holds records in the order requests completed, which changes from run
        to run (concurrent requests, machine load); everything downstream (vocabulary,
        selection, the order of training pairs and so the batches) must not."""
        from scicot_jax.data.store import RationaleStore

        store = RationaleStore.open(self.steps.step_dir(f"teacher_{prompt}") / "store")
        place = {ex.id: i for i, ex in enumerate(self.examples("train"))}
        recs = [r for r in store.records() if r.example_id in place]
        return sorted(recs, key=lambda r: (place[r.example_id], r.sample_index))

    def _task_vocab(self, prompts: Sequence[str]) -> None:
        """Fit the run's vocabulary to its train questions and teacher rationales."""
        from scicot_jax.pipeline import vocab_step

        def work(d: Path) -> dict:
            rats = [r.rationale for p in prompts for r in self.teacher_records(p)]
            path = vocab_step.train(
                d, vocab_step.corpus(self.examples("train"), rats), st.vocab_size, st.split_digits
            )
            return {"path": str(path)}

        st = self.cfg.student
        out = self.steps.run(
            "vocab",
            work,
            inputs={
                "size": st.vocab_size,
                "prompts": list(prompts),
                "split_digits": st.split_digits,
            },
        )
        self.student.use_vocab(self.steps.step_dir("vocab") / Path(out["path"]).name)

    # ------------------------------------------------------------------ selection
    def _probe(self, key: str, degree: int, half: int) -> dict:
        """A probe Stage-2 student trained on the correct rationales of one half of the train
        questions; it scores the other half (cross-fitting: no rationale is scored by a student
        that saw it)."""

        def work(d: Path) -> dict:
            recs = [
                r
                for r in self.teacher_records(key)
                if r.correct and r.sample_index < degree and question_half(r.example_id) == half
            ]
            train = self.by_id("train")
            self._new_store(
                d / "store",
                f"probe{half}_{key}_d{degree}",
                {"source": f"half {half} of teacher_{key}", "samples_per_example": degree},
                recs,
            )
            share = self.budget().share("scicot", "scorer", True)
            return self._train_stage(
                d,
                [rd_pair(train[r.example_id], r.rationale) for r in recs],
                "scorer",
                None if share is None else share / 2,  # two probes share the probes' budget
                lambda vocab: self._seqio_task("stage2", vocab, d / "store", degree),
            )

        return self.steps.run(
            f"probe{half}_{key}_d{degree}",
            work,
            inputs={
                "student": self.cfg.student.__dict__,
                "degree": degree,
                "budget": self._budget_key(),
            },
        )

    def rd_scorer(self, key: str, degree: int) -> tuple[Callable, list[dict], str]:
        """(scorer of stage-2 pairs, the probe students trained for it, how RD is measured).

        With an initial checkpoint, the pretrained student scores directly (as in MoRSD);
        otherwise two probes cross-fit: each scores the questions it was not trained on."""
        init = self.cfg.student.init_checkpoint
        if init:
            return (lambda pairs: self.student.score(init, pairs)), [], "pretrained student"
        probes = [self._probe(key, degree, h) for h in (0, 1)]
        train = self.by_id("train")
        half_of = {
            rd_pair(train[r.example_id], r.rationale): question_half(r.example_id)
            for r in self.teacher_records(key)
        }

        def score(pairs: Sequence[tuple[str, str]]) -> list[float]:
            out: list[float] = [0.0] * len(pairs)
            for h, probe in enumerate(probes):
                idx = [i for i, p in enumerate(pairs) if half_of[p] != h]  # the other half
                for i, rd in zip(
                    idx, self.student.score(probe["checkpoint"], [pairs[i] for i in idx])
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

    def flaw_fn(self) -> Callable[[Any], str | None] | None:
        """The oracle teacher's account of a train rationale's flaw (None for other teachers)."""
        from scicot_jax.teacher.fakes.oracle_behaviour import flaw_of

        task = self.card.source.get("task")
        if self.cfg.teacher.backend != "oracle" or self.card.source.get("type") != "synthetic":
            return None
        train = self.by_id("train")
        return lambda r: flaw_of(
            task, train[r.example_id].question, r.rationale, train[r.example_id].choices
        )

    def _select(self, spec: MethodSpec) -> dict:
        if spec.morsd:
            sel_cfg = replace(self.cfg.selection, max_degree=spec.degree)
        elif spec.random:  # MoRSD's control: as many per question, drawn at random
            sel_cfg = replace(
                self.cfg.selection,
                max_degree=spec.degree,
                use_difficulty=False,
                random_order=True,
                seed=self.cfg.seed,
            )
        else:
            # Fine-tune-CoT / Sci-CoT as published: every correct sample up to degree D.
            sel_cfg = SelectionConfig(dedupe=False, use_difficulty=False, max_degree=spec.degree)

        def work(d: Path) -> dict:
            scorer, probes, rd_source = None, [], None
            if spec.morsd and sel_cfg.use_difficulty:
                scorer, probes, rd_source = self.rd_scorer(self.prompt_of(spec), spec.degree)
            sel = select(
                self.teacher_records(self.prompt_of(spec)),
                self.by_id("train"),
                sel_cfg,
                scorer,
                flaw_fn=self.flaw_fn(),
            )
            sel.summary["rd_source"] = rd_source
            # A rationale-store run of the kept records: what the SeqIO registry turns into
            # one_stage / stage1 tasks (scicot_jax.tasks.register_run_dir).
            self._new_store(
                d / "store",
                f"select_{spec.slug}",
                {
                    "source": f"selection of teacher_{self.prompt_of(spec)}",
                    "samples_per_example": spec.degree,
                    "selection": asdict(sel_cfg),
                },
                sel.kept,
            )
            write_report(sel, d, title=f"Rationale selection for {spec.label}")
            return {
                "kept": len(sel.kept),
                "summary": sel.summary,
                "scorer_compute": compute_of(probes),
            }

        return self.steps.run(
            f"select_{spec.slug}",
            work,
            inputs={"selection": sel_cfg.__dict__, "budget": self._budget_key()},
        )

    def _new_store(self, path: Path, name: str, manifest: dict, records: Sequence = ()) -> None:
        """A fresh rationale-store run (a crashed step's partial one is replaced); on a pod
        process 0 writes it and the others wait for it (the run dir is shared)."""
        import shutil

        from scicot_jax.data.store import RationaleStore
        from scicot_jax.runtime import multihost

        def write() -> None:
            if path.exists():
                shutil.rmtree(path)
            run_name = f"{self.run_dir.name}_{name}"
            store = RationaleStore.create(
                path, {"card": self.card.name, "name": run_name, **manifest}
            )
            store.write_examples([ex for s in data_step.SPLITS for ex in self.examples(s)])
            store.extend(records)
            store.close()

        multihost.on_process_zero(write, f"rationale store {path}")

    def selected(self, spec: MethodSpec) -> list[tuple[Example, str]]:
        from scicot_jax.data.store import RationaleStore

        train = self.by_id("train")
        store = RationaleStore.open(self.steps.step_dir(f"select_{spec.slug}") / "store")
        return [(train[r.example_id], r.rationale) for r in store.records()]

    # ------------------------------------------------------------------ students
    def _seqio_task(
        self,
        method: str,
        vocab: str | None,
        run_dir: Path | None = None,
        degree: int | None = None,
    ) -> str:
        """Register (card or run) with the SeqIO registry; the name of the task to train on."""
        from scicot_jax import tasks
        from scicot_jax.data.store import RationaleStore

        if method == "baseline":  # the run's own splits (carved, limited), as the pairs are
            run = self.run_dir.name
            tasks.register_card(self.card, vocabulary=vocab, examples=self.examples, run=run)
            return tasks.task_name(self.card.name, "baseline", run)
        run_name = RationaleStore.open(run_dir).manifest.get("name") or run_dir.name
        tasks.register_run_dir(
            run_dir,
            card=self.card,
            vocabulary=vocab,
            methods=(method,),
            degrees=[degree] if degree else [],
        )
        return tasks.task_name(self.card.name, method, run_name, degree)

    # ------------------------------------------------------------------ budgets
    def budget(self) -> Budget:
        """The run's training budget (reference: plain fine-tuning on its train questions)."""
        if not hasattr(self, "_budget_cache"):
            st = self.cfg.student
            ref = [formats.baseline(ex) for ex in self.examples("train")]
            tokens, examples = self._per_row(ref)
            self._budget_cache = Budget(
                self.cfg.match, st.steps, st.batch_size, tokens, st.epochs, len(ref) / examples
            )
        return self._budget_cache

    def _budget_key(self) -> dict:
        b = self.budget()
        return {"match": b.match, "steps": b.reference_steps, "tokens": round(b.tokens)}

    def _per_row(self, pairs: Sequence[tuple[str, str]]) -> tuple[float, float]:
        """(tokens, examples) one batch row of these pairs carries, in the student's vocabulary:
        one example's tokens unpacked, several examples' when the student packs."""
        count = getattr(self.student, "tokens_per_example", None)
        if count is not None:
            tokens = float(count(pairs))
        else:
            tokens = sum(len(i.split()) + len(t.split()) + 2 for i, t in pairs) / max(1, len(pairs))
        per_row = getattr(self.student, "examples_per_row", None)
        examples = float(per_row(pairs)) if per_row is not None else 1.0
        return tokens * examples, examples

    def _train_stage(
        self,
        d: Path,
        pairs: list[tuple[str, str]],
        stage: str,
        share: float | None,
        task_fn: Callable[[str | None], str],
    ) -> dict:
        """Train one stage on ``share`` of the method's budget (None: an overhead stage's own
        budget), inside step directory ``d``."""
        if not pairs:
            raise ValueError(
                f"step {d.name}: no training examples (did the teacher get any "
                "answer right? see the select_* report)"
            )
        kw: dict[str, Any] = {"task": task_fn}
        tokens, examples = self._per_row(pairs)
        steps = self.budget().stage_steps(share, tokens, len(pairs) / examples)
        # None: the stage's own configured steps (stage2_steps, scorer_steps, steps)
        kw["steps"] = steps or plan.steps_for(self.cfg.student, stage)
        return {**self.student.train(pairs, d, stage=stage, **kw), "train_examples": len(pairs)}

    def _train(
        self,
        name: str,
        pairs_fn: Callable[[], list[tuple[str, str]]],
        stage: str,
        task_fn: Callable[[str | None], str],
        spec: MethodSpec | None = None,
    ) -> dict:
        method = spec.method if spec else "baseline"
        share = self.budget().share(method, stage, bool(spec and spec.morsd))
        return self.steps.run(
            name,
            lambda d: self._train_stage(d, pairs_fn(), stage, share, task_fn),
            inputs={
                "student": self.cfg.student.__dict__,
                "stage": stage,
                "budget": self._budget_key(),
                "share": share,
            },
        )

    def _student_rationales(self, spec: MethodSpec, ckpt: str) -> dict:
        """The Stage-1 student writes a rationale for every question of every split."""

        def work(d: Path) -> dict:
            from scicot_jax.data.store import RationaleRecord

            grader = grading.grader_for(self.card, "rationale")
            acc, records, rows = {}, [], []
            for split in ("train", *self.cfg.eval_splits):
                exs = self.examples(split)
                inputs = [formats.render_question(ex) for ex in exs]
                outs = self.student.predict(
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
            self._new_store(
                d / "store",
                f"rationales_{spec.slug}",
                {"source": f"student:{ckpt}", "prompt_kind": "stage1", "samples_per_example": 1},
                records,
            )
            return {"rationale_answer_accuracy": acc}

        return self.steps.run(f"rationales_{spec.slug}", work, inputs={"checkpoint": ckpt})

    def student_rationales(self, spec: MethodSpec) -> dict[tuple[str, str], str]:
        """(split, example id) -> the Stage-1 student's rationale."""
        from scicot_jax.data.store import RationaleStore

        store = RationaleStore.open(self.steps.step_dir(f"rationales_{spec.slug}") / "store")
        return {(r.split, r.example_id): r.rationale for r in store.records()}

    # ------------------------------------------------------------------ evaluation
    def _evaluate(
        self, slug: str, ckpt: str, stage: str, inputs_fn: Callable[[str, Example], str]
    ) -> dict:
        """Decode every eval split, grade with the card's rules (percent), write predictions."""
        grader = grading.grader_for(self.card, grading.OUTPUT_KIND[stage])

        def work(d: Path) -> dict:
            acc = {}
            for split in self.cfg.eval_splits:
                exs = self.examples(split)
                inputs = [inputs_fn(split, ex) for ex in exs]
                outs = self.student.predict(
                    ckpt, inputs, stage=stage, infer_input=d / "infer" / f"{split}.jsonl"
                )
                rows = grading.grade_outputs(grader, split, exs, inputs, outs)
                grading.write_predictions(d / f"predictions_{split}.jsonl", rows)
                acc[split] = grading.accuracy_from_predictions(rows).get(split)
            return {"accuracy": acc, "scale": "percent", "grader": asdict(grader)}

        return self.steps.run(f"eval_{slug}", work, inputs={"checkpoint": ckpt, "stage": stage})

    # ------------------------------------------------------------------ methods
    def _method(self, spec: MethodSpec) -> dict:
        before = set(self.steps.timings)
        entry: dict[str, Any] = {
            "method": spec.method,
            "degree": spec.degree,
            "selection": "morsd" if spec.morsd else "random" if spec.random else "none",
        }
        train = self.examples("train")
        if spec.method == "baseline":
            tr = self._train(
                "train_baseline",
                lambda: [formats.baseline(ex) for ex in train],
                "baseline",
                lambda vocab: self._seqio_task("baseline", vocab),
            )
            ev = self._evaluate(
                "baseline",
                tr["checkpoint"],
                "baseline",
                lambda split, ex: formats.render_question(ex),
            )
            entry.update(rationales_used=0, train_examples=tr["train_examples"])
            trained = {"student": tr}
        else:
            sel = self._select(spec)
            entry.update(rationales_used=sel["kept"], selection_summary=sel["summary"])
            trained = {"probes": sel.get("scorer_compute") or {}}
            sel_store = self.steps.step_dir(f"select_{spec.slug}") / "store"
            if spec.method == "finetune_cot":
                tr = self._train(
                    f"train_{spec.slug}",
                    lambda: [formats.one_stage(ex, r) for ex, r in self.selected(spec)],
                    "one_stage",
                    lambda vocab: self._seqio_task("one_stage", vocab, sel_store),
                    spec,
                )
                ev = self._evaluate(
                    spec.slug,
                    tr["checkpoint"],
                    "one_stage",
                    lambda split, ex: formats.render_question(ex),
                )
                entry.update(train_examples=tr["train_examples"])
                trained["student"] = tr
            else:
                s1 = self._train(
                    f"stage1_{spec.slug}",
                    lambda: [formats.stage1(ex, r) for ex, r in self.selected(spec)],
                    "stage1",
                    lambda vocab: self._seqio_task("stage1", vocab, sel_store),
                    spec,
                )
                rat = self._student_rationales(spec, s1["checkpoint"])
                written = self.student_rationales(spec)
                rat_store = self.steps.step_dir(f"rationales_{spec.slug}") / "store"
                s2 = self._train(
                    f"stage2_{spec.slug}",
                    lambda: [formats.stage2(ex, written["train", ex.id]) for ex in train],
                    "stage2",
                    lambda vocab: self._seqio_task("stage2", vocab, rat_store),
                    spec,
                )
                ev = self._evaluate(
                    spec.slug,
                    s2["checkpoint"],
                    "stage2",
                    lambda split, ex: formats.stage2(ex, written[split, ex.id])[0],
                )
                entry.update(
                    train_examples=s2["train_examples"],
                    stage1_rationale_answer_accuracy=rat["rationale_answer_accuracy"],
                )
                trained.update(student=s1, stage2=s2)
        entry["accuracy"] = ev["accuracy"]
        # Per stage: the student that learns from the question (baseline, Fine-tune-CoT's, Sci-CoT
        # Stage 1), Stage 2, MoRSD's probes; the total is the method's compute.
        stages = {k: compute_of([trained[k]]) for k in STAGES if k in trained}
        entry["stages"] = {k: v for k, v in stages.items() if k == "student" or v["steps"]}
        compute = compute_of(list(trained.values()))
        entry.update(
            train_steps=compute["steps"],
            train_tokens=compute["train_tokens"],
            train_flops=compute["train_flops"],
        )
        # Compute time of this method's own steps, as recorded when they ran (so a resumed run
        # reports the same figure); shared steps (teacher, data) are reported separately.
        entry["seconds"] = round(
            sum(v for k, v in self.steps.timings.items() if k not in before), 1
        )
        return entry

    def run(self) -> dict:
        """Run every step not yet finished; write and return results."""
        t0 = time.time()
        self.cfg_path = self.run_dir / "config.json"
        self.cfg.save(self.cfg_path)
        data = self._data()
        teacher = {}
        for prompt in sorted({self.prompt_of(s) for s in self.specs if s.prompt}):
            samples = max(s.degree for s in self.specs if self.prompt_of(s) == prompt)
            teacher[prompt] = self._teacher(prompt, samples)
        if self.cfg.student.vocab == "task":
            self._task_vocab(sorted(teacher))
        methods = {}
        for spec in self.specs:
            self.log(f"== {spec.label}")
            methods[spec.label] = self._method(spec)
            if spec.prompt:
                methods[spec.label]["teacher_accuracy"] = teacher[self.prompt_of(spec)].get(
                    "accuracy"
                )
        res = {
            "task": self.card.name,
            "run_dir": str(self.run_dir),
            "config": {
                "student": self.cfg.student.size,
                "budget": self._budget_key(),
                "preset": self.cfg.preset,
                "train_fraction": self.cfg.train_fraction,
                "methods": list(self.cfg.methods),
                "seed": self.cfg.seed,
            },
            "data": data,
            "chance": grading.chance_percent(self.card, self.examples("test")),
            "teacher": teacher,
            "methods": methods,
            "steps": dict(self.steps.timings),
            "skipped_steps": list(self.steps.skipped),
            "wall_seconds": round(time.time() - t0, 1),
            "teacher_tokens": {
                k: {"input": v.get("input_tokens", 0), "output": v.get("output_tokens", 0)}
                for k, v in teacher.items()
            },
        }
        results.write(self.run_dir, res)
        return res


def question_half(example_id: str) -> int:
    """0 or 1: which half of the train questions an example falls in (MoRSD cross-fitting)."""
    return hashlib.sha256(example_id.encode()).digest()[0] % 2


# Keys of a method's per-stage compute in results.json ("student": the one trained on the
# question alone, i.e. the baseline, Fine-tune-CoT's student or Sci-CoT's Stage 1).
STAGES = ("student", "stage2", "probes")


def compute_of(trained: Sequence[dict]) -> dict:
    """Steps, train tokens and train FLOPs summed over trained students."""
    return {
        k: sum(int(t.get(k) or 0) for t in trained)
        for k in ("steps", "train_tokens", "train_flops")
    }


def stage_checkpoint(src: str, dest: Path) -> Path:
    """Copy a remote (gs://, ...) checkpoint directory to local ``dest`` once, so a resumed run
    does not read it again."""
    from scicot_jax.paths import copy_tree
    from scicot_jax.runtime import deadlines

    return Path(deadlines.call("read", src, copy_tree, src.rstrip("/"), dest))


def run_pipeline(cfg: PipelineConfig, student: Student | None = None, **kw: Any) -> dict:
    """Build the default in-process student (``pipeline.student``) if none is given and run.

    A gs:// run directory is worked on in a local mirror pushed back after every step, so a
    restarted job (a new VM) resumes from what the bucket holds."""
    from scicot_jax.paths import Mirror, is_url

    if is_url(cfg.out):
        import tempfile

        with Mirror(cfg.out, tempfile.mkdtemp(prefix="scicot_run_")) as mirror:
            local = replace(cfg, out=mirror.local)
            return run_pipeline(local, student, after_step=mirror.sync, **kw)
    init = cfg.student.init_checkpoint
    if init and "://" in init:  # stage a gs:// checkpoint once, as a resumable step
        runner = StepRunner(cfg.out, log=kw.get("log", print), after_step=kw.get("after_step"))
        local = runner.step_dir("init_checkpoint") / "checkpoint"
        runner.run(
            "init_checkpoint",
            lambda d: {"path": str(stage_checkpoint(init, local))},
            inputs={"source": init},
        )
        cfg = replace(cfg, student=replace(cfg.student, init_checkpoint=str(local)))
    if student is None:
        from scicot_jax.pipeline.student import T5Student

        student = T5Student(cfg.student, card=kw.get("card"), task=cfg.task)
    return Pipeline(cfg, student, **kw).run()
