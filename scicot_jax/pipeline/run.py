"""The pipeline: data -> teacher -> selection -> students -> evaluation, as resumable steps.

Each step owns a directory inside the run directory (``pipeline.step_names`` lists them); a
finished step has a DONE.json and is skipped when the pipeline runs again. What each method
trains and evaluates is its object in ``pipeline.methods``; the Pipeline runs the shared steps
(data, teacher, vocabulary) and gives the methods what they build on (training a stage on its
share of the budget, evaluation, rationale stores, SeqIO tasks).

Decoding (the Stage-1 rationales, evaluation) goes through the infer binary's files:
infer/<split>.jsonl in, infer/<split>-predict.jsonl-<shard>-of-<n> out (pipeline.infer_files).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any, Protocol

from scicot_jax.data import formats, grading
from scicot_jax.data.examples import Example
from scicot_jax.pipeline import data_step, methods, plan, results, step_names
from scicot_jax.pipeline.budget import Budget
from scicot_jax.pipeline.config import MethodSpec, PipelineConfig
from scicot_jax.pipeline.results import STAGES, compute_of
from scicot_jax.pipeline.steps import StepRunner


class TrainData(Protocol):
    """A stage's pairs as a student trains on them (``plan.TokenizedPairs``/``PackedPairs``):
    ``len`` counts pairs; the budget reads the two sizes."""

    tokens_per_example: float  # inputs + targets, EOS included, cut to the max lengths
    examples_per_row: float  # 1 unpacked; packed, the examples one batch row carries

    def __len__(self) -> int: ...


class Student(Protocol):
    """What the pipeline needs from a student trainer (see ``pipeline.student``)."""

    def use_vocab(self, path: str | Path) -> None:
        """Tokenize with the SentencePiece model at ``path`` (the run's task vocabulary)."""

    def prepare(self, pairs: Sequence[tuple[str, str]]) -> TrainData:
        """(inputs, targets) texts as the student trains on them: tokenized (and packed) once,
        measured by the budget, then given to ``train``."""

    def train(
        self,
        data: TrainData,
        out_dir: Path,
        *,
        stage: str,
        task: Callable[[str | None], str],
        steps: int | None = None,
    ) -> dict:
        """Train on ``prepare``d pairs, the data ``task(vocabulary)`` registers as a SeqIO
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
        self._budget: Budget | None = None
        self._reference: tuple[list, TrainData] | None = None  # the budget's pairs, prepared

    # ------------------------------------------------------------------ data and teacher
    def examples(self, split: str) -> list[Example]:
        if split not in self._examples:
            self._examples[split] = data_step.load(self.steps.step_dir(step_names.DATA), split)
        return self._examples[split]

    def by_id(self, split: str) -> dict[str, Example]:
        return {ex.id: ex for ex in self.examples(split)}

    def _data(self) -> dict:
        c = self.cfg
        return self.steps.run(
            step_names.DATA,
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
            step_names.teacher(key),
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
        """D = 1: greedy, D > 1: sampled at 0.7 (Fine-tune-CoT), unless --teacher.temperature is set."""
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

        store = RationaleStore.open(self.steps.step_dir(step_names.teacher(prompt)) / "store")
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
            step_names.VOCAB,
            work,
            inputs={
                "size": st.vocab_size,
                "prompts": list(prompts),
                "split_digits": st.split_digits,
            },
        )
        self.student.use_vocab(self.steps.step_dir(step_names.VOCAB) / Path(out["path"]).name)

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

    # ------------------------------------------------------------------ what methods build on
    def new_store(self, path: Path, name: str, manifest: dict, records: Sequence = ()) -> None:
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

    def seqio_task(
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

    def reference_pairs(self) -> list[tuple[str, str]]:
        """The budget's reference data: plain fine-tuning on the train questions (the
        baseline's pairs)."""
        return [formats.baseline(ex) for ex in self.examples("train")]

    def prepare(self, pairs: list[tuple[str, str]]) -> TrainData:
        """The pairs as the student trains on them (``Student.prepare``); the reference pairs
        are prepared once, for the budget and the baseline."""
        if self._reference is not None and pairs == self._reference[0]:
            return self._reference[1]
        return self.student.prepare(pairs)

    def budget(self) -> Budget:
        """The run's training budget (reference: plain fine-tuning on its train questions)."""
        if self._budget is None:
            st = self.cfg.student
            ref = self.reference_pairs()
            tokens, rows = 0.0, 0.0
            if ref:
                data = self.student.prepare(ref)
                self._reference = (ref, data)
                tokens, rows = _per_row(data)
            self._budget = Budget(self.cfg.match, st.steps, st.batch_size, tokens, st.epochs, rows)
        return self._budget

    def budget_key(self) -> dict:
        b = self.budget()
        return {"match": b.match, "steps": b.reference_steps, "tokens": round(b.tokens)}

    def student_inputs(self) -> dict:
        """What every training step's fingerprint holds: the student's settings (with the run's
        seed, where a run's record has always held it), the budget."""
        student = {**self.cfg.student.__dict__, "seed": self.cfg.seed}
        return {"student": student, "budget": self.budget_key()}

    def train_stage(
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
        data = self.prepare(pairs)
        steps = self.budget().stage_steps(share, *_per_row(data))
        # None: the stage's own configured steps (stage2_steps, scorer_steps, steps)
        steps = steps or plan.steps_for(self.cfg.student, stage)
        trained = self.student.train(data, d, stage=stage, task=task_fn, steps=steps)
        return {**trained, "train_examples": len(pairs)}

    def train_step(
        self,
        name: str,
        pairs_fn: Callable[[], list[tuple[str, str]]],
        stage: str,
        task_fn: Callable[[str | None], str],
        spec: MethodSpec,
    ) -> dict:
        """The step ``name`` that trains one stage of ``spec`` on ``pairs_fn()``."""
        share = self.budget().share(spec.method, stage, spec.morsd)
        return self.steps.run(
            name,
            lambda d: self.train_stage(d, pairs_fn(), stage, share, task_fn),
            inputs={**self.student_inputs(), "stage": stage, "share": share},
        )

    def evaluate(
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

        name = step_names.evaluation(slug)
        return self.steps.run(name, work, inputs={"checkpoint": ckpt, "stage": stage})

    # ------------------------------------------------------------------ methods
    def _method(self, spec: MethodSpec) -> dict:
        before = set(self.steps.timings)
        method = methods.for_spec(spec)
        out = method.run(self)
        entry: dict[str, Any] = {
            "method": spec.method,
            "degree": spec.degree,
            "selection": method.selection_name,
            **out.fields,
            "accuracy": out.evaluation["accuracy"],
        }
        # Per stage: the student that learns from the question (baseline, Fine-tune-CoT's, Sci-CoT
        # Stage 1), Stage 2, MoRSD's probes; the total is the method's compute.
        trained = out.students
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

    def shared(self) -> tuple[dict, dict]:
        """The steps every method builds on (data, teacher runs, vocabulary): (data, teacher)."""
        data = self._data()
        teacher = {}
        for prompt in sorted({self.prompt_of(s) for s in self.specs if s.prompt}):
            samples = max(s.degree for s in self.specs if self.prompt_of(s) == prompt)
            teacher[prompt] = self._teacher(prompt, samples)
        if self.cfg.student.vocab == "task":
            self._task_vocab(sorted(teacher))
        return data, teacher

    def run(self, only: Sequence[str] | None = None) -> dict:
        """Run every step not yet finished; write and return results. ``only``: the labels of
        the methods to run (the shared steps stay those of every configured method)."""
        t0 = time.time()
        self.cfg_path = self.run_dir / "config.json"
        self.cfg.save(self.cfg_path)
        data, teacher = self.shared()
        methods = {}
        for spec in self.specs:
            if only is not None and spec.label not in only:
                continue
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
                "budget": self.budget_key(),
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


def _per_row(data: TrainData) -> tuple[float, float]:
    """(tokens one batch row carries, rows in one epoch) of prepared training data."""
    return data.tokens_per_example * data.examples_per_row, len(data) / data.examples_per_row


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
        local = runner.step_dir(step_names.INIT_CHECKPOINT) / "checkpoint"
        runner.run(
            step_names.INIT_CHECKPOINT,
            lambda d: {"path": str(stage_checkpoint(init, local))},
            inputs={"source": init},
        )
        cfg = replace(cfg, student=replace(cfg.student, init_checkpoint=str(local)))
    if student is None:
        from scicot_jax.pipeline.student import T5Student

        student = T5Student(cfg.student, card=kw.get("card"), task=cfg.task, seed=cfg.seed)
    return Pipeline(cfg, student, **kw).run()
