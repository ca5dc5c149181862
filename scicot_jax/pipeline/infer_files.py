"""The pipeline's student predictions as the infer binary's t5x files.

The pipeline writes the texts to decode as `<name>.jsonl` (rows `id`, `inputs`) and reads the
predictions from infer's output files beside it, `<name>-predict.jsonl-{shard:05}-of-{n:05}`,
whoever wrote them: the pipeline itself (infer's `run`, in process) or a user's infer jobs on
a pod, started on every host with `--gin.infer.input_file=<name>.jsonl` and
`--gin.INFER_OUTPUT_DIR=<its directory>` (and `--shard_id` / `infer.num_shards` for several).
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from pathlib import Path

from scicot_jax.files import atomic_write, read_jsonl


def write_inputs(path: Path, texts: Sequence[str]) -> None:
    """`path`: one row {"id": "<position>", "inputs": text} per text (rewritten if it differs)."""
    body = "".join(json.dumps({"id": str(i), "inputs": t}) + "\n" for i, t in enumerate(texts))
    if not path.exists() or path.read_text() != body:
        atomic_write(path, body)


def read_predictions(path: Path, texts: Sequence[str]) -> list[str] | None:
    """The prediction for each text from a complete set of infer output shards of `path`, or
    None when there is none (missing shards, rows or ids, or rows for other texts)."""
    pattern = re.compile(rf"{re.escape(path.stem)}-predict\.jsonl-(\d{{5}})-of-(\d{{5}})$")
    shards: dict[int, list[Path]] = {}
    for f in sorted(path.parent.glob(f"{path.stem}-predict.jsonl-*")):
        m = pattern.match(f.name)
        if m:
            shards.setdefault(int(m.group(2)), []).append(f)
    for n, files in sorted(shards.items()):
        if len(files) != n:
            continue
        got: dict[str, tuple[str, str]] = {}
        for f in files:
            for _, row in read_jsonl(f):
                inputs = row.get("inputs") or {}
                got[str(inputs.get("id"))] = (inputs.get("inputs_pretokenized"), row["prediction"])
        want = [(str(i), t) for i, t in enumerate(texts)]
        if len(got) == len(texts) and all(got.get(i, (None,))[0] == t for i, t in want):
            return [got[i][1] for i, _ in want]
    return None
