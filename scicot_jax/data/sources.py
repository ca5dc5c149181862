"""Readers that turn a task card's source into Examples.

Source types (card `[source] type = ...`): synthetic, jsonl, json (a top-level array), csv
(all three with a `[fields]` mapping), arc (official ARC JSONL), tfds (a prepared TFDS
`data_dir`, never downloaded), finetune_cot (the Fine-tune-CoT release: `{"metadata",
"data": {idx: [{question, answer, ...}]}}` or a plain list, plus a split file of sample
indices), dsbs (the distilling-step-by-step CQA / SVAMP JSONL files).
A card's split spec is a source split name, optionally sliced: "train", "train[:90%]",
"train[-200:]". Malformed records raise SourceError naming file:line.
"""

from __future__ import annotations

import ast
import csv
import io
import json
import operator
import re
from collections.abc import Iterator
from itertools import islice
from pathlib import Path
from typing import Any

from scicot_jax.data.answers import normalize_number
from scicot_jax.data.cards import SPLIT_SPEC_RE, TaskCard, load_card
from scicot_jax.data.examples import Example
from scicot_jax.files import read_json, read_jsonl
from scicot_jax.paths import as_path

LETTERS = "ABCDEFGHIJ"


class SourceError(ValueError):
    """A data file or record does not match what its card promises."""


def read_examples(
    card: TaskCard | str,
    split: str,
    *,
    data_dir: str | Path | None = None,
    limit: int | None = None,
) -> Iterator[Example]:
    """Examples of `split` (one of the card's splits); `data_dir` overrides the card's."""
    card = load_card(card)
    if split not in card.splits:
        raise SourceError(
            f"{card.path}: card {card.name!r} has no split {split!r}; it has {card.split_names}"
        )
    m = SPLIT_SPEC_RE.match(card.splits[split])
    if not m:
        raise SourceError(
            f"{card.path}: field 'splits.{split}': bad split spec {card.splits[split]!r}"
        )
    src_split, start, stop = m.groups()
    reader = _READERS[card.source["type"]]
    examples = reader(card, src_split, data_dir)
    if start is not None or stop is not None or "[" in card.splits[split]:
        items = list(examples)
        examples = iter(items[_index(start, len(items)) : _index(stop, len(items))])
    return islice(examples, limit) if limit is not None else examples


def _index(spec: str | None, n: int) -> int | None:
    if spec is None:
        return None
    if spec.endswith("%"):
        return round(n * int(spec[:-1]) / 100)
    return int(spec)


def _split_file(card: TaskCard, key: str, src_split: str, data_dir: Any) -> Path:
    files = card.source[key]
    if src_split not in files:
        raise SourceError(f"{card.path}: field 'source.{key}' has no entry for split {src_split!r}")
    path = card.resolve(files[src_split], data_dir)
    if not path.is_file():
        raise SourceError(f"{card.path}: data file for split {src_split!r} not found: {path}")
    return path


# ---------------------------------------------------------------- record iterators with lines
def iter_json_array(path: Path) -> Iterator[tuple[int, Any]]:
    """(line number where the element starts, element) for a file holding one JSON array."""
    text = as_path(path).read_text(encoding="utf-8")
    dec = json.JSONDecoder()
    ws = re.compile(r"[\s,]*")
    pos = ws.match(text, 0).end()
    if text[pos : pos + 1] != "[":
        # Files named .json are often JSONL (one object per line): read them as such.
        yield from read_jsonl(path, SourceError)
        return
    pos, line = pos + 1, text.count("\n", 0, pos + 1) + 1
    while True:
        nxt = ws.match(text, pos).end()
        line += text.count("\n", pos, nxt)
        pos = nxt
        if pos >= len(text):
            raise SourceError(f"{path}:{line}: unterminated JSON array")
        if text[pos] == "]":
            return
        try:
            obj, end = dec.raw_decode(text, pos)
        except json.JSONDecodeError as e:
            raise SourceError(f"{path}:{e.lineno}: invalid JSON ({e.msg})") from None
        yield line, obj
        line += text.count("\n", pos, end)
        pos = end


def iter_csv(path: Path) -> Iterator[tuple[int, dict]]:
    """(line number, row dict) for a CSV file with a header row."""
    with io.StringIO(as_path(path).read_bytes().decode("utf-8"), newline="") as f:
        reader = csv.DictReader(f)
        for row in reader:
            if None in row:
                raise SourceError(f"{path}:{reader.line_num}: more cells than header columns")
            yield reader.line_num, row


# ---------------------------------------------------------------- field mapping
def _get(record: Any, dotted: str) -> Any:
    """record["a"]["b"] for "a.b"; a "{x} {y}" template formats top-level fields."""
    if "{" in dotted:
        return dotted.format_map({k: v for k, v in record.items()})
    value = record
    for part in dotted.split("."):
        if isinstance(value, dict) and part in value:
            value = value[part]
        elif isinstance(value, list) and part.isdigit() and int(part) < len(value):
            value = value[int(part)]
        else:
            raise KeyError(dotted)
    return value


def parse_choices(value: Any) -> tuple[tuple[str, str], ...]:
    """Choices as (label, text) from a list of texts, of {label, text}, of (label, text) pairs
    (Example.to_json), or {label: [], text: []}."""
    if isinstance(value, str):
        value = json.loads(value) if value.strip().startswith(("[", "{")) else value.split("|")
    if isinstance(value, dict):
        labels, texts = value.get("label"), value.get("text")
        if not isinstance(labels, list) or not isinstance(texts, list) or len(labels) != len(texts):
            raise ValueError("choices dict needs equally long 'label' and 'text' lists")
        pairs = list(zip(labels, texts))
    elif isinstance(value, list):
        if all(isinstance(c, dict) for c in value):
            if not all("label" in c and "text" in c for c in value):
                raise ValueError("each choice needs 'label' and 'text'")
            pairs = [(c["label"], c["text"]) for c in value]
        elif value and all(isinstance(c, list | tuple) and len(c) == 2 for c in value):
            pairs = [(c[0], c[1]) for c in value]
        else:
            pairs = list(zip(LETTERS, value))
    else:
        raise ValueError(f"cannot read choices from {type(value).__name__}")
    pairs = [(str(lb).strip(), str(t).strip()) for lb, t in pairs]
    if pairs and all(lb.isdigit() for lb, _ in pairs):  # some ARC questions use 1-4
        pairs = [(LETTERS[int(lb) - 1], t) for lb, t in pairs]
    if len(pairs) < 2 or len({lb for lb, _ in pairs}) != len(pairs):
        raise ValueError(f"need >= 2 choices with distinct labels, got {pairs}")
    return tuple(pairs)


def mc_answer_label(answer: Any, choices: tuple[tuple[str, str], ...], how: str = "auto") -> str:
    """The label of the gold answer given as a label, a choice text or an index."""
    ans = str(answer).strip()
    labels = [lb for lb, _ in choices]
    if how in ("auto", "label") and ans in labels:
        return ans
    if how in ("auto", "label") and ans.isdigit() and "".join(labels) == LETTERS[: len(labels)]:
        if 1 <= int(ans) <= len(labels):
            return labels[int(ans) - 1]  # a numeric key whose labels were remapped to letters
    if how in ("auto", "text"):
        for lb, t in choices:
            if t == ans or t.lower() == ans.lower():
                return lb
    if how == "index" and ans.lstrip("-").isdigit() and 0 <= int(ans) < len(labels):
        return labels[int(ans)]
    raise ValueError(f"answer {ans!r} is not a choice (as {how}) of {choices}")


def _map_record(card: TaskCard, record: Any, where: str, default_id: str) -> Example:
    fields = card.fields
    if not isinstance(record, dict):
        raise SourceError(f"{where}: expected a JSON object, got {type(record).__name__}")

    def get(key: str) -> Any:
        try:
            return _get(record, fields[key])
        except (KeyError, IndexError) as e:
            raise SourceError(f"{where}: record lacks field {e.args[0]!r} (fields.{key})") from None

    question, answer = get("question"), get("answer")
    if not isinstance(question, str) or not question.strip():
        raise SourceError(f"{where}: fields.question ({fields['question']!r}) is empty or not text")
    if answer is None or str(answer).strip() == "":
        raise SourceError(f"{where}: fields.answer ({fields['answer']!r}) is empty")
    choices: tuple[tuple[str, str], ...] = ()
    if "choices" in fields:
        try:
            choices = parse_choices(get("choices"))
            answer = mc_answer_label(answer, choices, fields.get("answer_format", "auto"))
        except ValueError as e:
            raise SourceError(f"{where}: {e}") from None
    elif card.answer_type == "number":
        if normalize_number(answer) is None:
            raise SourceError(
                f"{where}: fields.answer ({fields['answer']!r}) is not a number: {answer!r}"
            )
    meta = {}
    for key in fields:
        if key not in ("id", "question", "answer", "choices", "answer_format"):
            meta[key] = get(key)
    ex_id = str(get("id")) if "id" in fields else default_id
    return Example(ex_id, question.strip(), str(answer).strip(), choices, meta)


# ---------------------------------------------------------------- readers per source type
def _read_synthetic(card: TaskCard, src_split: str, data_dir: Any) -> Iterator[Example]:
    from scicot_jax.data.synthetic import generate

    src = card.source
    yield from generate(
        src["task"], src_split, n=src.get("sizes", {}).get(src_split), seed=src.get("seed", 0),
        difficulty=src.get("difficulty"),
    )  # fmt: skip


def _read_table(card: TaskCard, src_split: str, data_dir: Any) -> Iterator[Example]:
    path = _split_file(card, "files", src_split, data_dir)
    kind = card.source["type"]
    rows = (
        read_jsonl(path, SourceError)
        if kind == "jsonl"
        else iter_csv(path)
        if kind == "csv"
        else iter_json_array(path)
    )
    for i, (lineno, record) in enumerate(rows):
        yield _map_record(card, record, f"{path}:{lineno}", f"{card.name}-{src_split}-{i}")


def _read_arc(card: TaskCard, src_split: str, data_dir: Any) -> Iterator[Example]:
    path = _split_file(card, "files", src_split, data_dir)
    for lineno, rec in read_jsonl(path, SourceError):
        where = f"{path}:{lineno}"
        try:
            q = rec["question"]
            choices = parse_choices(q["choices"])
            answer = mc_answer_label(rec["answerKey"], choices, "label")
            yield Example(str(rec["id"]), q["stem"].strip(), answer, choices)
        except KeyError as e:
            raise SourceError(f"{where}: ARC record lacks field {e.args[0]!r}") from None
        except (TypeError, AttributeError) as e:
            raise SourceError(f"{where}: not an ARC record ({e})") from None
        except ValueError as e:
            raise SourceError(f"{where}: {e}") from None


def _read_tfds(card: TaskCard, src_split: str, data_dir: Any) -> Iterator[Example]:
    name = card.source["name"]
    root = as_path(data_dir) if data_dir is not None else card.data_dir
    ds_dir = root / name.split(":")[0].split("/")[0]
    if not ds_dir.is_dir():
        raise SourceError(
            f"{card.path}: TFDS dataset {name!r} is not prepared under data_dir {root} "
            f"(no {ds_dir}); prepare it where there is network access, e.g. "
            f"`tfds build {name.split('/')[0]} --data_dir {root}`, or pass data_dir=..."
        )
    import tensorflow_datasets as tfds  # lazy: pulls in TensorFlow

    try:
        ds = tfds.load(name, split=src_split, data_dir=str(root), download=False)
    except Exception as e:  # tfds raises assorted types for missing versions/splits
        raise SourceError(
            f"{card.path}: cannot read TFDS {name!r} split {src_split!r} from {root}: {e}"
        ) from e

    def text(x: Any) -> str:
        return x.decode("utf-8") if isinstance(x, bytes) else str(x)

    for i, rec in enumerate(tfds.as_numpy(ds)):
        where = f"{root}/{name}[{src_split}][{i}]"
        try:
            ch = rec["choices"]
            choices = parse_choices(
                {"label": [text(x) for x in ch["label"]], "text": [text(x) for x in ch["text"]]}
            )
            answer = mc_answer_label(text(rec["answerKey"]), choices, "label")
        except (KeyError, ValueError) as e:
            raise SourceError(f"{where}: {e}") from None
        yield Example(text(rec["id"]), text(rec["question"]).strip(), answer, choices)


def _sample_line(text: str, data: Any, idx: int, data_pos: int) -> int:
    """Line where sample `idx` starts (only computed for error messages)."""
    if isinstance(data, dict):
        pos = text.find(f'"{idx}":', max(data_pos, 0))
    else:  # the idx-th element of a list: count element openings at the list's depth
        pos, depth, seen, in_str, esc = -1, 0, -1, False, False
        start = text.find("[", max(data_pos, 0))
        for j in range(start, len(text)):
            c = text[j]
            if in_str:
                esc, in_str = (not esc and c == "\\"), in_str and (esc or c != '"')
                continue
            if c == '"':
                in_str = True
            elif c in "[{":
                depth += 1
                if depth == 2:
                    seen += 1
                    if seen == idx:
                        pos = j
                        break
            elif c in "]}":
                depth -= 1
    return text.count("\n", 0, pos) + 1 if pos >= 0 else 0


def _read_finetune_cot(card: TaskCard, src_split: str, data_dir: Any) -> Iterator[Example]:
    path = card.resolve(card.source["file"], data_dir)
    if not path.is_file():
        raise SourceError(f"{card.path}: Fine-tune-CoT data file not found: {path}")
    text = path.read_text(encoding="utf-8")  # kept: sample line numbers are found in it
    try:
        raw = json.loads(text)
    except json.JSONDecodeError as e:
        raise SourceError(f"{path}:{e.lineno}: invalid JSON ({e.msg})") from None
    data = raw.get("data") if isinstance(raw, dict) else raw
    if isinstance(data, list):
        samples = {
            int(r.get("sample_index", i)) if isinstance(r, dict) else i: r
            for i, r in enumerate(data)
        }
    elif isinstance(data, dict):
        try:
            samples = {int(k): v for k, v in data.items()}
        except ValueError as e:
            raise SourceError(f"{path}: 'data' keys must be sample indices ({e})") from None
    else:
        raise SourceError(f"{path}:1: expected {{'metadata', 'data': ...}} or a list of samples")
    if "split_file" in card.source:
        split_path = card.resolve(card.source["split_file"], data_dir)
        if not split_path.is_file():
            raise SourceError(f"{card.path}: Fine-tune-CoT split file not found: {split_path}")
        splits = read_json(split_path, SourceError)
        if not isinstance(splits, dict):
            raise SourceError(f"{split_path}:1: expected {{split: [sample indices]}}")
        if src_split not in splits:
            raise SourceError(f"{split_path}: no split {src_split!r}; it has {sorted(splits)}")
        indices = [int(i) for i in splits[src_split]]
    elif src_split == "all":
        indices = sorted(samples)
    else:
        raise SourceError(
            f"{card.path}: field 'source.split_file' missing (needed for split {src_split!r})"
        )
    data_pos = text.find('"data"')
    for idx in indices:
        if idx not in samples:
            raise SourceError(f"{path}: sample index {idx} (from the split file) is not in 'data'")
        rec = samples[idx]
        rec = rec[0] if isinstance(rec, list) and rec else rec
        if not isinstance(rec, dict) or "question" not in rec or "answer" not in rec:
            raise SourceError(
                f"{path}:{_sample_line(text, data, idx, data_pos)}: sample {idx} needs 'question' and 'answer'"
            )
        meta = {"sample_index": idx}
        yield Example(
            f"{card.name}-{idx}", str(rec["question"]).strip(), str(rec["answer"]).strip(), (), meta
        )


_OPS = {
    ast.Add: operator.add,
    ast.Sub: operator.sub,
    ast.Mult: operator.mul,
    ast.Div: operator.truediv,
}


def eval_equation(equation: str) -> float:
    """Value of an arithmetic equation such as '( 84.0 / 2.0 )' (+ - * / only)."""

    def ev(node: ast.AST) -> float:
        if isinstance(node, ast.Expression):
            return ev(node.body)
        if isinstance(node, ast.Constant) and isinstance(node.value, int | float):
            return float(node.value)
        if isinstance(node, ast.BinOp) and type(node.op) in _OPS:
            return _OPS[type(node.op)](ev(node.left), ev(node.right))
        if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub):
            return -ev(node.operand)
        raise ValueError(f"unsupported expression {ast.dump(node)[:60]}")

    return ev(ast.parse(equation.strip(), mode="eval"))


def _read_dsbs(card: TaskCard, src_split: str, data_dir: Any) -> Iterator[Example]:
    path = _split_file(card, "files", src_split, data_dir)
    dataset = card.source["dataset"]
    for i, (lineno, rec) in enumerate(iter_json_array(path)):
        where = f"{path}:{lineno}"
        try:
            if dataset == "cqa":
                choices = parse_choices(list(rec["choices"]))
                answer = mc_answer_label(rec["answer"], choices, "text")
                yield Example(str(rec["id"]), rec["question"].strip(), answer, choices)
            else:
                value = eval_equation(rec["label"])
                question = " ".join(rec["input"].split())
                meta = {"equation": rec["label"], "index": i}
                yield Example(
                    f"{card.name}-{src_split}-{i}", question, normalize_number(value), (), meta
                )
        except KeyError as e:
            raise SourceError(f"{where}: record lacks field {e.args[0]!r}") from None
        except (ValueError, SyntaxError, ZeroDivisionError, TypeError, AttributeError) as e:
            raise SourceError(f"{where}: bad {dataset} record: {e}") from None


_READERS = {
    "synthetic": _read_synthetic,
    "jsonl": _read_table,
    "json": _read_table,
    "csv": _read_table,
    "arc": _read_arc,
    "tfds": _read_tfds,
    "finetune_cot": _read_finetune_cot,
    "dsbs": _read_dsbs,
}
