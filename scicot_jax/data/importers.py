"""Importers: recorded real teacher outputs -> rationale-store runs (with their Examples).

- Fine-tune-CoT completions (`finetune_cot/completions/D_<task>.json`, card `ftcot_<task>`):
  the rationale is `reasoning_completion`; the answer is parsed from the step-2 `completion`
  with that paper's evaluator (compat mode), so teacher accuracy matches its Table 1.
- distilling-step-by-step PaLM files (`distill_step_by_step/{cqa,svamp}/palm/<split>_CoT_<k>.json`,
  cards `commonsense_qa` / `dsbs_svamp`): continuations in example order, cut at the next "Q:";
  the rationale is the text before "So the answer is (d) ..." / "The answer is ( 84 / 2 )".
- MCC-KD multi-CoT SVAMP (`svamp_multi_cot/train.json`, card `svamp_multi_cot`): 10 rationales
  per question -> sample_index 0..9.

Usage: `python -m scicot_jax.data.importers {finetune_cot TASK | dsbs cqa|svamp | svamp_multi_cot} RUN_DIR`.
"""

from __future__ import annotations

import argparse
import json
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from scicot_jax.clihelp import show_defaults
from scicot_jax.data import answers, grading
from scicot_jax.data.cards import TaskCard, load_card
from scicot_jax.data.examples import Example
from scicot_jax.data.sources import SourceError, eval_equation, read_examples
from scicot_jax.data.store import RationaleRecord, RationaleStore


@dataclass
class ImportedRun:
    """Examples and records of one import, plus the manifest describing it."""

    card: TaskCard
    manifest: dict[str, Any]
    examples: list[Example] = field(default_factory=list)
    records: list[RationaleRecord] = field(default_factory=list)

    def accuracy(self, split: str | None = None) -> float:
        """Percent of records (of `split`) whose parsed answer is correct."""
        recs = [r for r in self.records if split is None or r.split == split]
        return 100.0 * sum(r.correct is True for r in recs) / max(len(recs), 1)


def _splits(card: TaskCard, splits: Sequence[str] | None) -> list[str]:
    chosen = list(splits) if splits is not None else card.split_names
    for s in chosen:
        if s not in card.splits:
            raise ValueError(f"{card.path}: card {card.name!r} has no split {s!r}")
    return chosen


# -- Fine-tune-CoT ----------------------------------------------------------------------------


def finetune_cot(
    task: str,
    *,
    splits: Sequence[str] | None = None,
    data_dir: str | Path | None = None,
    card: TaskCard | str | None = None,
) -> ImportedRun:
    """Fine-tune-CoT's text-davinci-002 Zero-shot-CoT completions for `task` (e.g. "svamp")."""
    card = load_card(card or f"ftcot_{task}")
    path = card.resolve(card.source["file"], data_dir)
    raw = json.loads(path.read_text(encoding="utf-8"))
    meta = raw.get("metadata", {}) if isinstance(raw, dict) else {}
    data = raw["data"] if isinstance(raw, dict) else raw
    params = meta.get("parameters", {})
    temperature = params.get("reasoning_temperature", params.get("temperature"))
    model = meta.get("base_model", "unknown")
    run = ImportedRun(
        card,
        {
            "card": card.name,
            "importer": "finetune_cot",
            "teacher": model,
            "prompt_kind": "zero_shot_cot",
            "temperature": temperature,
            "source_file": str(path),
            "release_metadata": meta,
        },
    )
    for split in _splits(card, splits):
        for ex in read_examples(card, split, data_dir=data_dir):
            run.examples.append(ex)
            idx = ex.meta["sample_index"]
            completions = data[str(idx)] if isinstance(data, dict) else [data[idx]]
            for j, c in enumerate(completions):
                where = f"{path}: sample {idx} completion {j}"
                try:
                    rationale, step2 = c["reasoning_completion"], c["completion"]
                except (KeyError, TypeError) as e:
                    raise SourceError(f"{where}: lacks field {e}") from None
                pred, ok = grading.grader_for(card, "teacher_step2").grade(
                    step2, ex.answer, ex.choices
                )
                run.records.append(
                    RationaleRecord(
                        example_id=ex.id,
                        sample_index=int(c.get("completion_index", j)),
                        rationale=rationale.strip(),
                        answer=pred,
                        correct=ok,
                        source=f"teacher:{model}",
                        prompt_kind="zero_shot_cot",
                        temperature=temperature,
                        split=split,
                        extra={
                            "completion": step2,
                            "finish_reason": c.get("reasoning_finish_reason"),
                        },
                    )
                )
    return run


# -- distilling step-by-step (PaLM 540B few-shot CoT) -----------------------------------------

_ANSWER_PHRASE = {"cqa": "So the answer is", "svamp": "The answer is"}
_CHOICE_RE = re.compile(r"\(([a-zA-Z])\)")


def _palm_files(palm_dir: Path, split: str) -> list[Path]:
    files = sorted(
        palm_dir.glob(f"{split}_CoT_*.json"), key=lambda p: int(p.stem.rsplit("_", 1)[1])
    )
    if not files:
        raise SourceError(f"{palm_dir}: no PaLM files {split}_CoT_<k>.json")
    return files


def split_palm(continuation: str, dataset: str) -> tuple[str, str | None]:
    """(rationale, answer text or None): cut at the next "Q:", then at the answer phrase."""
    text = continuation.split("Q:", 1)[0].strip()
    phrase = _ANSWER_PHRASE[dataset]
    if phrase not in text:
        return text, None
    rationale, _, answer = text.rpartition(phrase)
    return rationale.strip(), answer.strip()


def parse_palm_answer(answer_text: str | None, dataset: str, ex: Example) -> str | None:
    """'(d) math problem.' -> the choice label; '( 84.0 / 2.0 ).' -> '42'."""
    if answer_text is None:
        return None
    if dataset == "cqa":
        m = _CHOICE_RE.search(answer_text)
        if m:
            i = ord(m.group(1).lower()) - ord("a")
            if 0 <= i < len(ex.choices):
                return ex.choices[i][0]
        return answers.parse_answer(answer_text, "multiple_choice", choices=ex.choices)
    equation = answer_text.rstrip(".").strip()
    try:
        return answers.normalize_number(eval_equation(equation))
    except (ValueError, SyntaxError, ZeroDivisionError, TypeError, RecursionError):
        return None  # e.g. "((28 - 13) and (28 - 15))": no single value


def distill_step_by_step(
    dataset: str,
    *,
    splits: Sequence[str] | None = None,
    data_dir: str | Path | None = None,
    card: TaskCard | str | None = None,
) -> ImportedRun:
    """PaLM 540B few-shot CoT rationales of the distilling-step-by-step release ("cqa"|"svamp")."""
    if dataset not in _ANSWER_PHRASE:
        raise ValueError(f"dataset must be 'cqa' or 'svamp', got {dataset!r}")
    card = load_card(card or {"cqa": "commonsense_qa", "svamp": "dsbs_svamp"}[dataset])
    palm_dir = card.resolve("palm", data_dir)
    run = ImportedRun(
        card,
        {
            "card": card.name,
            "importer": "distill_step_by_step",
            "teacher": "palm-540b",
            "prompt_kind": "few_shot_cot",
            "temperature": None,
            "source_dir": str(palm_dir),
        },
    )
    for split in _splits(card, splits):
        examples = list(read_examples(card, split, data_dir=data_dir))
        outputs: list[tuple[Path, int, Any]] = []
        for f in _palm_files(palm_dir, card.splits[split]):
            arr = json.loads(f.read_text(encoding="utf-8"))
            if not isinstance(arr, list):
                raise SourceError(f"{f}:1: expected a JSON array of continuations")
            outputs += [(f, k, o) for k, o in enumerate(arr)]
        if len(outputs) != len(examples):
            raise SourceError(
                f"{palm_dir}: {len(outputs)} PaLM continuations for {len(examples)} "
                f"{split} examples of card {card.name!r}; they must align one to one"
            )
        run.examples += examples
        for ex, (f, k, out) in zip(examples, outputs, strict=True):
            if not isinstance(out, str):
                raise SourceError(f"{f}: element {k}: expected a string continuation")
            rationale, answer_text = split_palm(out, dataset)
            pred = parse_palm_answer(answer_text, dataset, ex)
            ok = grading.grader_for(card, "answer").correct(pred, ex.answer)
            run.records.append(
                RationaleRecord(
                    example_id=ex.id,
                    sample_index=0,
                    rationale=rationale,
                    answer=pred,
                    correct=ok,
                    source="teacher:palm-540b",
                    prompt_kind="few_shot_cot",
                    temperature=None,
                    split=split,
                    extra={"answer_text": answer_text},
                )
            )
    return run


# -- MCC-KD multi-CoT SVAMP ---------------------------------------------------------------


def svamp_multi_cot(
    *, data_dir: str | Path | None = None, card: TaskCard | str | None = None
) -> ImportedRun:
    """MCC-KD's 10 teacher rationales per SVAMP training question (sample_index 0..9)."""
    card = load_card(card or "svamp_multi_cot")
    path = card.resolve(card.source["files"]["train"], data_dir)
    raw = json.loads(path.read_text(encoding="utf-8"))
    examples = list(read_examples(card, "train", data_dir=data_dir))
    if len(raw) != len(examples):
        raise SourceError(f"{path}: {len(raw)} records but the card read {len(examples)}")
    run = ImportedRun(
        card,
        {
            "card": card.name,
            "importer": "svamp_multi_cot",
            "teacher": "mcc-kd release",
            "prompt_kind": "zero_shot_cot",
            "temperature": None,
            "source_file": str(path),
        },
        examples,
    )
    for i, (ex, rec) in enumerate(zip(examples, raw, strict=True)):
        outs = rec.get("output") if isinstance(rec, dict) else None
        if not isinstance(outs, list) or not all(isinstance(o, str) for o in outs):
            raise SourceError(f"{path}: record {i}: field 'output' must be a list of rationales")
        for j, rationale in enumerate(outs):
            pred, ok = grading.grader_for(card, "rationale").grade(rationale, ex.answer, ex.choices)
            run.records.append(
                RationaleRecord(
                    example_id=ex.id,
                    sample_index=j,
                    rationale=rationale.strip(),
                    answer=pred,
                    correct=ok,
                    source="teacher:mcc-kd",
                    prompt_kind="zero_shot_cot",
                    temperature=None,
                    split="train",
                )
            )
    return run


# -- writing ----------------------------------------------------------------------------------


def write_run(run: ImportedRun, run_dir: str | Path, *, name: str | None = None) -> RationaleStore:
    """Write (or complete, if interrupted) a run dir: manifest, examples.jsonl, records.jsonl."""
    manifest = {**run.manifest, "name": name or Path(run_dir).name}
    store = RationaleStore.create(run_dir, manifest, exist_ok=True)
    if store.manifest.get("card") != run.card.name:
        raise ValueError(
            f"{store.manifest_path}: run is for card {store.manifest.get('card')!r}, "
            f"not {run.card.name!r}"
        )
    store.write_examples(run.examples)
    have = store.keys()
    store.extend(r for r in run.records if r.key not in have)
    by_split: dict[str, list[RationaleRecord]] = {}
    for r in run.records:
        by_split.setdefault(r.split, []).append(r)
    store.update_manifest(
        num_examples=len(run.examples),
        num_records=len(store),
        samples_per_example=max((r.sample_index + 1 for r in run.records), default=0),
        teacher_accuracy={s: round(run.accuracy(s), 2) for s in by_split},
    )
    store.close()
    return store


IMPORTERS = {
    "finetune_cot": finetune_cot,
    "dsbs": distill_step_by_step,
    "svamp_multi_cot": svamp_multi_cot,
}


def main(argv: Sequence[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("importer", choices=sorted(IMPORTERS))
    ap.add_argument("args", nargs="*", help="finetune_cot: TASK; dsbs: cqa|svamp")
    ap.add_argument("run_dir")
    ap.add_argument("--data_dir", default=None)
    a = show_defaults(ap).parse_args(argv)
    run = IMPORTERS[a.importer](*a.args, data_dir=a.data_dir)
    store = write_run(run, a.run_dir)
    print(
        json.dumps(
            {
                "run_dir": str(store.run_dir),
                **{
                    k: store.manifest[k]
                    for k in ("card", "num_examples", "num_records", "teacher_accuracy")
                },
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
