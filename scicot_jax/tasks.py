"""SeqIO registry: tasks for every task card and every rationale run (t5x MIXTURE_OR_TASK_MODULE).

Importing this module registers:

  scicot:{card}:baseline                  question -> answer                 (card examples)
  scicot:{card}:baseline:{run}            the same on a pipeline run's splits (registered by it)
  scicot:{card}:one_stage:{run}           question -> "rationale --> answer" (Fine-tune-CoT)
  scicot:{card}:stage1:{run}              question -> rationale              (Sci-CoT Stage 1)
  scicot:{card}:stage2:{run}              question + rationale -> answer     (Sci-CoT Stage 2)
  scicot:{card}:{method}:{run}_d{D}       the same, from the first D samples per question

`{card}` is the card name and `{run}` the run's name (manifest "name", else its directory name),
with every character other than letters, digits, "_" and "." replaced by "_" (SeqIO names match
`[\\w\\d.:_#]+`; ":" only separates fields). The undecorated run task uses every sample; `_d{D}`
variants are registered for D = 1, 2, 4, ... below the run's samples per question, and for that
maximum itself. Degree variants are Tasks, not seqio.Mixtures, so one epoch visits each kept
sample exactly once and evaluation splits are not duplicated.

Runs are the rationale-store directories (manifest.json naming a "card") found under
$SCICOT_RATIONALE_ROOT (default ~/.scicot/rationales), up to three levels deep; the pipeline
registers new runs with `register_run_dir(path)`. Train splits take their targets from the run's
records; the other splits of one_stage and stage1 come from the card (gold answers for metrics),
while stage2 has exactly the splits the run has records for (Stage-1 student rationales).
Teacher (and imported) train records are kept only when their answer is correct, as in
Fine-tune-CoT (`correct_only`). Vocabulary: the `vocabulary` argument, else $SCICOT_VOCAB, else
the tiny demo vocabulary for synthetic cards and T5's cc_all.32000.100extra for real ones.
"""

from __future__ import annotations

import json
import os
import re
import warnings
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import seqio
import tensorflow as tf

from scicot_jax.data import formats, grading
from scicot_jax.data.cards import TaskCard, list_cards, load_card
from scicot_jax.data.examples import Example
from scicot_jax.data.store import RationaleRecord, RationaleStore
from scicot_jax.data.vocab import VOCAB_ENV, get_vocabulary

ROOT_ENV = "SCICOT_RATIONALE_ROOT"
DEFAULT_ROOT = "~/.scicot/rationales"
PREFIX = "scicot"
METHODS = ("baseline", "one_stage", "stage1", "stage2")
RUN_METHODS = ("one_stage", "stage1", "stage2")
_UNSAFE = re.compile(r"[^\w.]")


@dataclass(frozen=True)
class TaskInfo:
    """What a registered name means, for the pipeline and trainer."""

    name: str
    card: TaskCard
    method: str
    run_dir: Path | None
    degree: int | None
    feature_lengths: dict[str, int]
    splits: tuple[str, ...]


_INFO: dict[str, TaskInfo] = {}


def sanitize(name: str) -> str:
    """A name component legal in SeqIO names and free of the ':' separator."""
    return _UNSAFE.sub("_", name)


def task_name(card: str, method: str, run: str | None = None, degree: int | None = None) -> str:
    """The registered name for (card, method, run, degree); see the module docstring."""
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}; expected one of {METHODS}")
    if method != "baseline" and run is None:
        raise ValueError(f"{method} tasks need a run (a baseline's run names its examples)")
    name = f"{PREFIX}:{sanitize(card)}:{method}"
    if run is not None:
        name += f":{sanitize(run)}"
    if degree is not None:
        name += f"_d{degree}"
    return name


def task_info(name: str) -> TaskInfo:
    """Card, method, run, degree and default feature lengths of a registered task."""
    if name not in _INFO:
        raise KeyError(f"{name!r} is not a registered scicot task; known: {len(_INFO)} tasks")
    return _INFO[name]


def registered_names() -> list[str]:
    return sorted(_INFO)


def feature_lengths(card: TaskCard, method: str) -> dict[str, int]:
    """Default TASK_FEATURE_LENGTHS: the card's, widened/narrowed for the method's texts."""
    inputs, targets = card.feature_lengths["inputs"], card.feature_lengths["targets"]
    answer_len = min(targets, 32)  # answers alone are short in any vocabulary
    if method == "baseline":
        return {"inputs": inputs, "targets": answer_len}
    if method == "stage2":
        return {"inputs": inputs + targets, "targets": answer_len}
    return {"inputs": inputs, "targets": targets}


def resolve_vocabulary(
    card: TaskCard, vocabulary: seqio.Vocabulary | str | os.PathLike[str] | None = None
) -> seqio.Vocabulary:
    """The argument, else $SCICOT_VOCAB, else demo (synthetic cards) or T5 (real cards)."""
    if isinstance(vocabulary, seqio.Vocabulary):
        return vocabulary
    if vocabulary is None and not os.environ.get(VOCAB_ENV):
        vocabulary = "demo" if card.source.get("type") == "synthetic" else "t5"
    return get_vocabulary(vocabulary)


# -- rows: plain python, then one tf.data.Dataset per split ---------------------------------

_STR_FIELDS = ("id", "inputs", "targets", "answer", "choices")


def _row(ex: Example, inputs: str, targets: str, sample_index: int = -1) -> dict[str, Any]:
    return {
        "id": ex.id,
        "inputs": inputs,
        "targets": targets,
        "answer": ex.answer,
        "choices": json.dumps([list(c) for c in ex.choices]),
        "sample_index": sample_index,
    }


def _to_dataset(rows: Sequence[dict[str, Any]]) -> tf.data.Dataset:
    cols = {
        k: tf.constant([r[k] for r in rows], dtype=tf.string, shape=[len(rows)])
        for k in _STR_FIELDS
    }
    cols["sample_index"] = tf.constant(
        np.array([r["sample_index"] for r in rows], np.int32), shape=[len(rows)]
    )
    return tf.data.Dataset.from_tensor_slices(cols)


def _card_examples(card: TaskCard, split: str) -> list[Example]:
    from scicot_jax.data.sources import read_examples

    # t5x's --tfds_data_dir (seqio.set_tfds_data_dir_override, which has no getter) replaces
    # every Task's TFDS data_dir, so it replaces a TFDS card's too.
    override = getattr(seqio.utils, "_TFDS_DATA_DIR_OVERRIDE", None)
    data_dir = override if override and card.source.get("type") == "tfds" else None
    return list(read_examples(card, split, data_dir=data_dir))


def _first_d(records: Iterable[RationaleRecord], degree: int | None) -> list[RationaleRecord]:
    """Per example, the first `degree` records by sample_index (all when degree is None)."""
    by_ex: dict[str, list[RationaleRecord]] = {}
    for rec in records:
        by_ex.setdefault(rec.example_id, []).append(rec)
    out = []
    for recs in by_ex.values():
        recs.sort(key=lambda r: r.sample_index)
        out.extend(recs if degree is None else recs[:degree])
    return out


def _keep(rec: RationaleRecord, correct_only: bool | None) -> bool:
    # Only train rationales are filtered: filtering eval splits by correctness would leak labels.
    if rec.split != "train" or correct_only is False:
        return True
    if correct_only is None and rec.source.startswith("student"):
        return True
    return rec.correct is True


class _Run:
    """A run's records and examples, read on demand (datasets are built lazily by SeqIO)."""

    def __init__(self, run_dir: Path, card: TaskCard, correct_only: bool | None):
        self.run_dir, self.card, self.correct_only = run_dir, card, correct_only
        store = RationaleStore.open(run_dir)
        self.splits: set[str] = set()
        per_example: dict[str, int] = {}
        for rec in store.records():
            self.splits.add(rec.split)
            per_example[rec.example_id] = per_example.get(rec.example_id, 0) + 1
        self.max_samples = max(per_example.values(), default=0)

    def examples(self, split: str) -> dict[str, Example]:
        # A run's own examples.jsonl (importers write one) is what its ids refer to.
        own = RationaleStore.open(self.run_dir).examples()
        if own:
            return {ex.id: ex for ex in own}
        if split not in self.card.splits:
            return {}
        return {ex.id: ex for ex in _card_examples(self.card, split)}

    def records(self, split: str, degree: int | None) -> list[RationaleRecord]:
        recs = RationaleStore.open(self.run_dir).records(split)
        return [r for r in _first_d(recs, degree) if _keep(r, self.correct_only)]

    def uses_records(self, method: str, split: str) -> bool:
        """Stage 2 reads rationales for every split; the others only train on them and
        evaluate on the card's full split (gold answers), whatever the run holds for it."""
        return method == "stage2" or split == "train" or split not in self.card.splits

    def rows(self, method: str, split: str, degree: int | None) -> list[dict[str, Any]]:
        fmt = getattr(formats, method)
        if not self.uses_records(method, split):
            return [_row(ex, *fmt(ex, "")) for ex in _card_examples(self.card, split)]
        examples = self.examples(split)
        rows = []
        for rec in self.records(split, degree):
            ex = examples.get(rec.example_id)
            if ex is None:
                raise KeyError(
                    f"{self.run_dir}: record example_id={rec.example_id!r} (split {split!r}) "
                    f"matches no example of card {self.card.name!r} nor the run's examples.jsonl"
                )
            rows.append(_row(ex, *fmt(ex, rec.rationale), rec.sample_index))
        return rows


# -- postprocessing and metrics -------------------------------------------------------------


def _text(value: Any) -> str:
    if isinstance(value, np.ndarray):
        value = value.item()
    return value.decode("utf-8") if isinstance(value, bytes) else str(value)


def make_postprocessor(card: TaskCard, method: str) -> Callable[..., str]:
    """Decoded text -> parsed answer (targets -> the example's gold answer), by the card's
    grader for what ``method``'s student writes (``scicot_jax.data.grading``)."""
    grader = grading.grader_for(card, grading.OUTPUT_KIND[method])

    def postprocess(output: Any, example: dict | None = None, is_target: bool = False) -> str:
        if is_target and example is not None and "answer" in example:
            return _text(example["answer"])
        choices = ()
        if example is not None and "choices" in example:
            choices = tuple(tuple(c) for c in json.loads(_text(example["choices"])))
        return grader.parse(_text(output), choices) or ""

    return postprocess


def make_metric(card: TaskCard, method: str) -> Callable[[Sequence[str], Sequence[str]], dict]:
    """Accuracy in percent (Stage 1: the accuracy of the answers its rationales reach)."""
    key = "rationale_answer_accuracy" if method == "stage1" else "accuracy"
    grader = grading.grader_for(card, grading.OUTPUT_KIND[method])

    def accuracy(targets: Sequence[str], predictions: Sequence[str]) -> dict[str, float]:
        hits = sum(grader.correct(p or None, t) for t, p in zip(targets, predictions, strict=True))
        return {key: grading.percent(hits, len(targets)) or 0.0}

    accuracy.__name__ = key
    return accuracy


# -- registration ---------------------------------------------------------------------------


def _add_task(
    name: str,
    card: TaskCard,
    method: str,
    rows_fn: Callable[[str], list[dict[str, Any]]],
    splits: Sequence[str],
    vocab: seqio.Vocabulary,
    run_dir: Path | None = None,
    degree: int | None = None,
) -> str:
    def dataset_fn(split: str, shuffle_files: bool, seed: int | None = None) -> tf.data.Dataset:
        del shuffle_files, seed  # in-memory rows; Task.get_dataset(shuffle=True) shuffles
        return _to_dataset(rows_fn(split))

    features = {
        "inputs": seqio.Feature(vocab, add_eos=True, required=True),
        "targets": seqio.Feature(vocab, add_eos=True),
    }
    if name in seqio.TaskRegistry.names():
        seqio.TaskRegistry.remove(name)  # re-registration replaces (e.g. a new vocabulary)
    seqio.TaskRegistry.add(
        name,
        source=seqio.FunctionDataSource(dataset_fn, splits=list(splits)),
        output_features=features,
        # Cacheable by seqio's cache_tasks_main; EOS after the cache (it needs sequence_length).
        preprocessors=[
            seqio.preprocessors.tokenize,
            seqio.CacheDatasetPlaceholder(),
            seqio.preprocessors.append_eos_after_trim,
        ],
        postprocess_fn=make_postprocessor(card, method),
        metric_fns=[make_metric(card, method)],
    )
    _INFO[name] = TaskInfo(
        name, card, method, run_dir, degree, feature_lengths(card, method), tuple(splits)
    )
    return name


def register_card(
    card: TaskCard | str,
    *,
    vocabulary: seqio.Vocabulary | str | None = None,
    examples: Callable[[str], Sequence[Example]] | None = None,
    run: str | None = None,
) -> list[str]:
    """Register the card's baseline task; returns its name in a list. With ``examples`` (a
    pipeline run's own splits, in order) the task reads those and is named after ``run``."""
    card = load_card(card)
    vocab = resolve_vocabulary(card, vocabulary)
    read = examples or (lambda split: _card_examples(card, split))

    def rows_fn(split: str) -> list[dict[str, Any]]:
        return [_row(ex, *formats.baseline(ex)) for ex in read(split)]

    name = task_name(card.name, "baseline", run if examples else None)
    return [_add_task(name, card, "baseline", rows_fn, card.split_names, vocab)]


def degrees_for(max_samples: int) -> list[int]:
    """1, 2, 4, ... below max_samples, then max_samples itself."""
    out, d = [], 1
    while d < max_samples:
        out.append(d)
        d *= 2
    return out + [max_samples] if max_samples > 0 else []


def register_run_dir(
    path: str | os.PathLike[str],
    *,
    card: TaskCard | str | None = None,
    name: str | None = None,
    vocabulary: seqio.Vocabulary | str | None = None,
    correct_only: bool | None = None,
    methods: Sequence[str] = RUN_METHODS,
    degrees: Sequence[int] | None = None,
) -> list[str]:
    """Register one_stage/stage1/stage2 tasks (and `_d{D}` variants) for a rationale run.

    card: defaults to the manifest's "card". correct_only: None filters teacher/imported train
    records to correct answers (student records kept), True filters all train records, False
    none. degrees: defaults to `degrees_for(samples per question)`.
    """
    run_dir = Path(path).expanduser().resolve()
    store = RationaleStore.open(run_dir)
    card_ref = card if card is not None else store.manifest.get("card")
    if card_ref is None:
        raise ValueError(f"{store.manifest_path}: field 'card' missing (or pass card=)")
    card = load_card(card_ref if isinstance(card_ref, TaskCard) else str(card_ref))
    run_name = name or str(store.manifest.get("name") or run_dir.name)
    vocab = resolve_vocabulary(card, vocabulary)
    run = _Run(run_dir, card, correct_only)
    degs = list(degrees) if degrees is not None else degrees_for(run.max_samples)
    names = []
    for method in methods:
        if method not in RUN_METHODS:
            raise ValueError(f"unknown run method {method!r}; expected one of {RUN_METHODS}")
        splits = [
            s
            for s in dict.fromkeys([*card.split_names, *sorted(run.splits)])
            if s in run.splits or not run.uses_records(method, s)
        ]
        for degree in [None, *degs]:

            def rows_fn(split: str, _m: str = method, _d: int | None = degree) -> list[dict]:
                return run.rows(_m, split, _d)

            tname = task_name(card.name, method, run_name, degree)
            names.append(_add_task(tname, card, method, rows_fn, splits, vocab, run_dir, degree))
    return names


def find_run_dirs(root: str | os.PathLike[str], max_depth: int = 3) -> list[Path]:
    """Run directories (holding manifest.json) under root, sorted, at most max_depth deep."""
    root = Path(root).expanduser()
    found: list[Path] = []
    level = [root] if root.is_dir() else []
    for _ in range(max_depth + 1):
        nxt = []
        for d in level:
            if RationaleStore.is_run_dir(d):
                found.append(d)
            else:
                nxt.extend(sorted(p for p in d.iterdir() if p.is_dir()))
        level = nxt
    return sorted(found)


def rationale_root() -> Path:
    return Path(os.environ.get(ROOT_ENV) or DEFAULT_ROOT).expanduser()


def register_all(
    root: str | os.PathLike[str] | None = None,
    *,
    vocabulary: seqio.Vocabulary | str | None = None,
) -> list[str]:
    """Register every shipped card and every run under root; broken runs warn, not fail."""
    names = []
    for card_name in list_cards():
        try:
            names += register_card(card_name, vocabulary=vocabulary)
        except ValueError as e:
            warnings.warn(f"skipping task card {card_name}: {e}", stacklevel=2)
    for run_dir in find_run_dirs(root if root is not None else rationale_root()):
        try:
            names += register_run_dir(run_dir, vocabulary=vocabulary)
        except (ValueError, KeyError, OSError) as e:
            warnings.warn(f"skipping rationale run {run_dir}: {e}", stacklevel=2)
    return names


register_all()
