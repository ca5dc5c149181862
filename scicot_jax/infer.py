"""The infer binary: predict (greedy / sample / beam) or score a SeqIO split or a JSONL file.

  python -m scicot_jax.infer --gin_file=runs/infer.gin --gin.CHECKPOINT_PATH=/tmp/m \
    --gin.MIXTURE_OR_TASK_NAME=scicot:synthetic_coin_flip:baseline --gin.OUTPUT_PATH=/tmp/p.jsonl

Writes one JSON line per example: id, inputs, outputs (num_decodes texts) and scores for
predict; id, inputs, targets, sum_logprob, mean_logprob, num_tokens for score.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import gin
from scicot_jax.runtime import gin_utils

log = logging.getLogger(__name__)

MODES = ("predict", "score")


@gin.configurable("infer")
def run(
    *,
    checkpoint_path: str = gin.REQUIRED,
    output_path: str = gin.REQUIRED,
    mode: str = "predict",
    model: Any = None,
    mixture_or_task_name: str | None = None,
    split: str = "validation",
    task_feature_lengths: dict | None = None,
    module: str | None = "scicot_jax.tasks",
    input_file: str | None = None,
    vocabulary: str | None = None,
    id_key: str = "id",
    inputs_key: str = "inputs",
    targets_key: str = "targets",
    batch_size: int = 32,
    max_decode_length: int | None = None,
    method: str = "greedy",
    num_decodes: int = 1,
    temperature: float = 1.0,
    top_k: int = 0,
    top_p: float = 1.0,
    alpha: float = 0.6,
    seed: int = 0,
    limit: int | None = None,
    model_parallel: int = 1,
) -> dict[str, Any]:
    """Runs prediction or scoring and writes JSONL; returns {"output_path", "num_examples"}."""
    from scicot_jax.runtime import inference
    from scicot_jax.runtime import partitioning as part

    if mode not in MODES:
        raise ValueError(f"infer.mode={mode!r}; expected one of {MODES}")
    if (mixture_or_task_name is None) == (input_file is None):
        raise ValueError("infer: give exactly one of mixture_or_task_name or input_file")
    part.maybe_initialize_distributed()
    mesh = part.make_mesh(model_parallel)
    config, params = inference.load_model(checkpoint_path, gin_utils.plain(model), mesh)
    lengths = dict(task_feature_lengths or {"inputs": 512, "targets": 128})
    if input_file is not None:
        examples, vocab = _jsonl_examples(
            input_file,
            vocabulary,
            lengths,
            id_key,
            inputs_key,
            targets_key if mode == "score" else None,
            limit,
        )
    else:
        examples, vocab = _task_examples(mixture_or_task_name, split, lengths, module, limit)
    log.info("%s: %d examples", mode, len(examples))
    rows: list[dict[str, Any]] = []
    if mode == "predict":
        outs = inference.predict(
            params,
            config,
            mesh,
            [e["inputs"] for e in examples],
            input_length=lengths["inputs"],
            max_decode_length=max_decode_length or lengths["targets"],
            batch_size=batch_size,
            method=method,
            num_decodes=num_decodes,
            temperature=temperature,
            top_k=top_k,
            top_p=top_p,
            alpha=alpha,
            seed=seed,
        )
        for e, (toks, scores) in zip(examples, outs):
            texts = [vocab.decode(t) for t in toks]
            row = {
                "id": e["id"],
                "inputs": e["inputs_text"],
                "outputs": texts,
                "scores": scores,
                "output": texts[0],
            }
            if e.get("targets_text") is not None:
                row["targets"] = e["targets_text"]
            rows.append(row)
    else:
        missing = [e["id"] for e in examples if e.get("targets") is None]
        if missing:
            raise ValueError(f"score mode needs targets; missing for ids {missing[:5]}")
        res = inference.score(
            params,
            config,
            mesh,
            [e["inputs"] for e in examples],
            [e["targets"] for e in examples],
            input_length=lengths["inputs"],
            target_length=lengths["targets"],
            batch_size=batch_size,
        )
        for e, r in zip(examples, res):
            rows.append(
                {"id": e["id"], "inputs": e["inputs_text"], "targets": e["targets_text"], **r}
            )
    _write_jsonl(output_path, rows)
    return {"output_path": str(output_path), "num_examples": len(rows)}


def _task_examples(
    name: str, split: str, lengths: dict, module: str | None, limit: int | None
) -> tuple[list[dict], Any]:
    from scicot_jax.data.seqio_feed import task_examples

    exs, task = task_examples(name, split, lengths, module, limit)
    vocab = task.output_features["targets"].vocabulary
    return [
        {
            "id": str(e["id"]),
            "inputs": e["inputs"],
            "targets": e.get("targets"),
            "inputs_text": e.get("inputs_pretokenized", ""),
            "targets_text": e.get("targets_pretokenized"),
        }
        for e in exs
    ], vocab


def _jsonl_examples(
    path: str,
    vocabulary: str | None,
    lengths: dict,
    id_key: str,
    inputs_key: str,
    targets_key: str | None,
    limit: int | None,
) -> tuple[list[dict], Any]:
    """Reads and tokenizes a JSONL file (EOS appended after trimming, as SeqIO does)."""
    from scicot_jax.data.vocab import get_vocabulary

    vocab = get_vocabulary(vocabulary)
    eos = 1
    out = []
    with open(path) as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            if limit is not None and len(out) >= limit:
                break
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as e:
                raise ValueError(f"{path}:{lineno}: invalid JSON ({e.msg})") from e
            for key in [inputs_key] + ([targets_key] if targets_key else []):
                if not isinstance(obj.get(key), str):
                    raise ValueError(f"{path}:{lineno}: field {key!r} missing or not a string")
            ex = {
                "id": str(obj.get(id_key, f"line-{lineno}")),
                "inputs_text": obj[inputs_key],
                "inputs": list(vocab.encode(obj[inputs_key]))[: lengths["inputs"] - 1] + [eos],
            }
            if targets_key:
                ex["targets_text"] = obj[targets_key]
                ex["targets"] = list(vocab.encode(obj[targets_key]))[: lengths["targets"] - 1]
                ex["targets"] += [eos]
            out.append(ex)
    return out, vocab


def _write_jsonl(path: str | Path, rows: Sequence[dict]) -> None:
    import jax

    if jax.process_index() != 0:
        return
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w") as f:
        for r in rows:
            f.write(json.dumps(r, ensure_ascii=False) + "\n")
    tmp.replace(path)  # readers never see a half-written file
    log.info("wrote %d rows to %s", len(rows), path)


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    """Parses flags and gin, then runs `infer`."""
    return gin_utils.run_binary(argv, "Predict or score with a T5 student.", run)


def console_entry() -> None:
    gin_utils.console_main(main, "scicot-infer")


if __name__ == "__main__":
    console_entry()
