"""SeqIO metric evaluation of a model: decode a split, postprocess, run the task's metrics."""

from __future__ import annotations

import itertools
import json
import logging
from typing import Any

import jax
from jax.sharding import Mesh

from scicot_jax.data import seqio_feed as data_feed
from scicot_jax.files import atomic_write, write_jsonl
from scicot_jax.model import T5Config
from scicot_jax.model.decoding import DecodeConfig
from scicot_jax.paths import PathLike, as_path
from scicot_jax.runtime import inference, multihost
from scicot_jax.runtime import partitioning as part

log = logging.getLogger(__name__)


def evaluate_task(
    params: Any,
    config: T5Config,
    mesh: Mesh,
    task_name: str,
    split: str,
    feature_lengths: dict,
    *,
    module: str | None = None,
    limit: int | None = None,
    batch_size: int = 32,
    decode: DecodeConfig | None = None,
    use_cached: bool = False,
) -> tuple[dict[str, float], list[dict[str, Any]]]:
    """(metrics keyed "<task>/<metric>", prediction rows) for decoding `split` (default greedy,
    up to the targets' feature length; the first of a sampled decode's outputs is scored).

    On a pod each host reads and decodes only its data shard of the split (every H-th example);
    the rows are gathered, in the split's order, so every process returns all of them.
    """
    host, hosts = part.host_shard(mesh)
    metrics: dict[str, float] = {}
    rows: list[dict[str, Any]] = []
    for task in data_feed.sub_tasks(task_name, module):
        if split not in task.splits or not task.metric_fns:
            continue
        examples, _ = data_feed.task_examples(
            task.name,
            split,
            feature_lengths,
            module,
            multihost.local_limit(limit, host, hosts),
            use_cached=use_cached,
            shard=(host, hosts),
        )
        vocab = task.output_features["targets"].vocabulary
        outs = inference.predict(
            params,
            config,
            mesh,
            [ex["inputs"] for ex in examples],
            input_length=feature_lengths["inputs"],
            decode=(decode or DecodeConfig()).with_length(feature_lengths["targets"]),
            batch_size=batch_size,
            vocab_size=vocab.vocab_size,
        )
        mine = [
            _row(task, split, ex, vocab.decode(toks[0]), scores[0])
            for ex, (toks, scores) in zip(examples, outs)
        ]
        task_rows = multihost.gather_shards(mine, host, hosts)
        if not task_rows:
            continue
        rows += task_rows
        targets = [r["target"] for r in task_rows]
        preds = [r["prediction"] for r in task_rows]
        for fn in task.metric_fns:
            for k, v in fn(targets, preds).items():
                metrics[f"{task.name}/{k}"] = float(getattr(v, "value", v))
    return metrics, rows


def _row(task: Any, split: str, ex: dict[str, Any], text: str, score: float) -> dict[str, Any]:
    """One prediction row: the example, decoded text, postprocessed prediction and target."""
    pred = task.postprocess_fn(text, example=ex, is_target=False)
    target = task.postprocess_fn(ex.get("targets_pretokenized", ""), example=ex, is_target=True)
    return {
        "task": task.name,
        "input": ex,
        "id": ex["id"],
        "inputs": ex.get("inputs_pretokenized", ""),
        "output": text,
        "prediction": pred,
        "target": target,
        "targets_pretokenized": ex.get("targets_pretokenized", ""),
        "score": score,
        # the grader's view (scicot_jax.data.grading): accuracy recomputes from these
        "split": split,
        "parsed": pred or None,
        "gold": target,
        "correct": _row_correct(task, target, pred),
    }


def _row_correct(task: Any, target: str, pred: str) -> bool | None:
    """Whether one prediction is right by the task's first metric (100 % on this row)."""
    if not task.metric_fns:
        return None
    values = list(task.metric_fns[0]([target], [pred]).values())
    return bool(values) and float(getattr(values[0], "value", values[0])) == 100.0


def _logged_step(line: str) -> int | None:
    """The step of a `{task}-metrics.jsonl` line (None: not a step line; it is kept)."""
    try:
        value = json.loads(line)
    except ValueError:
        return None
    return value.get("step") if isinstance(value, dict) else None


def write_t5x_outputs(
    out_dir: PathLike,
    step: int,
    metrics: dict[str, float],
    rows: list[dict[str, Any]],
    write_n_results: int | None = None,
) -> None:
    """SeqIO JSONLogger's files (process 0): `{task}-{step:06}.jsonl`, `{task}-metrics.jsonl`.

    Metrics are keyed "<task>/<metric>"; each task's line holds {"step", <metric>: value}.
    write_n_results: the first N rows per task only; 0 writes no rows file (JSONLogger's).
    """
    if jax.process_index() != 0:
        return
    out = as_path(out_dir)
    for task in sorted({r["task"] for r in rows} | {k.split("/")[0] for k in metrics}):
        mine = {k.split("/", 1)[1]: v for k, v in metrics.items() if k.split("/")[0] == task}
        if mine:
            path = out / f"{task}-metrics.jsonl"
            old = path.read_text().splitlines(keepends=True) if path.exists() else []
            # a re-run of a step replaces its line rather than adding a second one
            kept = "".join(x for x in old if _logged_step(x) != step)
            atomic_write(path, kept + json.dumps({"step": step, **mine}) + "\n")
        if write_n_results == 0:
            continue
        keys = ("input", "target", "prediction", "score", "split", "parsed", "gold", "correct")
        mine_rows = ({k: r[k] for k in keys} for r in rows if r["task"] == task)
        write_jsonl(out / f"{task}-{step:06}.jsonl", itertools.islice(mine_rows, write_n_results))
