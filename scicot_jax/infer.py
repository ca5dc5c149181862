"""The infer binary: predict (greedy / sample / beam) or score a SeqIO split or a JSONL file.

  python -m scicot_jax.infer --gin_file=runs/infer.gin --gin.CHECKPOINT_PATH=/tmp/m \
    --gin.MIXTURE_OR_TASK_NAME=scicot:synthetic_coin_flip:baseline --gin.INFER_OUTPUT_DIR=/tmp/p

Writes t5x's files, one per task (a JSONL input counts as a task named after the file):
`{INFER_OUTPUT_DIR}/{task}-{mode}.jsonl-{shard_id:05}-of-{num_shards:05}`, rows as t5x's
infer.py writes them: `inputs` (the *_pretokenized features, plus `id`), and `prediction`
(mode predict; a list of num_decodes texts with return_all_decodes), `prediction` and
`aux.scores` (predict_with_aux), or `score`, the targets' log-likelihood (score).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import gin
from scicot_jax.model.decoding import DecodeConfig
from scicot_jax.paths import as_path
from scicot_jax.runtime import gin_utils

log = logging.getLogger(__name__)

MODES = ("predict", "predict_with_aux", "score")
gin_utils.register_configurables(DecodeConfig)  # `infer.decode = @DecodeConfig()`


@gin.configurable("infer")
def run(
    *,
    checkpoint_path: str = gin.REQUIRED,
    output_dir: str = gin.REQUIRED,
    mode: str = "predict",
    model: Any = None,
    mixture_or_task_name: str | None = None,
    split: str = "validation",
    task_feature_lengths: dict | None = None,
    module: str | None = "scicot_jax.tasks",
    use_cached: bool = False,
    shard_id: int = 0,
    num_shards: int = 1,
    input_file: str | None = None,
    vocabulary: str | None = None,
    id_key: str = "id",
    inputs_key: str = "inputs",
    targets_key: str = "targets",
    batch_size: int = 32,
    decode: DecodeConfig | None = None,
    return_all_decodes: bool = False,
    limit: int | None = None,
    model_parallel: int = 1,
) -> dict[str, Any]:
    """Runs prediction or scoring of shard `shard_id` of `num_shards`; returns {task: path}.

    shard_id/num_shards split the examples across separate infer jobs (t5x's infer flags);
    within a job each host reads and decodes only its data shard of the job's examples, the
    rows are gathered in the examples' order and process 0 writes them. `decode` (default
    greedy) decodes up to the targets' feature length unless its max_decode_length is set.
    """
    import jax

    from scicot_jax.files import write_jsonl
    from scicot_jax.runtime import deadlines, inference, multihost
    from scicot_jax.runtime import partitioning as part

    if mode not in MODES:
        raise ValueError(f"infer.mode={mode!r}; expected one of {MODES}")
    if (mixture_or_task_name is None) == (input_file is None):
        raise ValueError("infer: give exactly one of mixture_or_task_name or input_file")
    if not 0 <= shard_id < num_shards:
        raise ValueError(f"infer.shard_id={shard_id} not in [0, num_shards={num_shards})")
    part.maybe_initialize_distributed()
    mesh = part.make_mesh(model_parallel)
    with deadlines.storage("restore checkpoint", checkpoint_path):
        config, params = inference.load_model(checkpoint_path, gin_utils.plain(model), mesh)
    host, hosts = part.host_shard(mesh)
    mine = multihost.shard_info(host, hosts, shard_id, num_shards)
    lengths = dict(task_feature_lengths or {"inputs": 512, "targets": 128})
    decode = (gin_utils.plain(decode) or DecodeConfig()).with_length(lengths["targets"])
    if input_file is not None:
        examples, vocab = deadlines.call(
            "read",
            input_file,
            _jsonl_examples,
            input_file,
            vocabulary,
            lengths,
            id_key,
            inputs_key,
            targets_key if mode == "score" else None,
            limit,
            config.eos_id,
            mine,
        )
        tasks = [(as_path(input_file).name.split(".")[0], examples, vocab)]
    else:
        from scicot_jax.data.seqio_feed import sub_tasks

        local_limit = multihost.local_limit(limit, host, hosts)
        tasks = [
            (t.name, *_task_examples(t.name, split, lengths, module, local_limit, use_cached, mine))
            for t in sub_tasks(mixture_or_task_name, module)
            if split in t.splits
        ]
    written = {}
    for task, exs, vocab in tasks:
        log.info("%s %s: %d examples on this host (shard %d of %d)", mode, task, len(exs), *mine)
        if mode == "score":
            rows = _score_rows(inference, params, config, mesh, exs, lengths, batch_size, vocab)
        else:
            outs = inference.predict(
                params,
                config,
                mesh,
                [e["inputs"] for e in exs],
                input_length=lengths["inputs"],
                decode=decode,
                batch_size=batch_size,
                progress=f"{mode} {task}",
                vocab_size=vocab.vocab_size,
            )
            rows = [
                _prediction_row(e, toks, scores, vocab, mode, return_all_decodes)
                for e, (toks, scores) in zip(exs, outs)
            ]
        rows = multihost.gather_shards(rows, host, hosts)
        path = as_path(output_dir) / f"{task}-{mode}.jsonl-{shard_id:05}-of-{num_shards:05}"
        if jax.process_index() == 0:
            deadlines.call("write", path, write_jsonl, path, rows)
            log.info("wrote %d rows to %s", len(rows), path)
        written[task] = str(path)
    part.sync_processes("infer outputs written")  # on return every host can read them
    return written


def _inputs(e: dict) -> dict[str, Any]:
    """t5x's `inputs` field: the *_pretokenized features (and our example id)."""
    out = {"id": e["id"], "inputs_pretokenized": e["inputs_text"]}
    if e.get("targets_text") is not None:
        out["targets_pretokenized"] = e["targets_text"]
    return out


def _prediction_row(
    e: dict, toks: list, scores: list, vocab: Any, mode: str, all_decodes: bool
) -> dict[str, Any]:
    """One predict / predict_with_aux row; best decode only unless return_all_decodes."""
    best = max(range(len(scores)), key=scores.__getitem__)
    texts = [vocab.decode(t) for t in toks]
    row = {"inputs": _inputs(e), "prediction": texts if all_decodes else texts[best]}
    if mode == "predict_with_aux":
        row["aux"] = {"scores": scores if all_decodes else scores[best]}
    return row


def _score_rows(
    inference: Any,
    params: Any,
    config: Any,
    mesh: Any,
    exs: list,
    lengths: dict,
    batch_size: int,
    vocab: Any,
) -> list[dict[str, Any]]:
    missing = [e["id"] for e in exs if e.get("targets") is None]
    if missing:
        raise ValueError(f"score mode needs targets; missing for ids {missing[:5]}")
    res = inference.score(
        params,
        config,
        mesh,
        [e["inputs"] for e in exs],
        [e["targets"] for e in exs],
        input_length=lengths["inputs"],
        target_length=lengths["targets"],
        batch_size=batch_size,
        vocab_size=vocab.vocab_size,
    )
    return [{"inputs": _inputs(e), "score": r["sum_logprob"]} for e, r in zip(exs, res)]


def _task_examples(
    name: str,
    split: str,
    lengths: dict,
    module: str | None,
    limit: int | None,
    use_cached: bool,
    shard: tuple[int, int],
) -> tuple[list[dict], Any]:
    from scicot_jax.data.seqio_feed import task_examples

    exs, task = task_examples(
        name, split, lengths, module, limit, use_cached=use_cached, shard=shard
    )
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
    eos_id: int,
    shard: tuple[int, int] = (0, 1),
) -> tuple[list[dict], Any]:
    """Reads a JSONL file's first `limit` rows and tokenizes shard (index, count) of them, rows
    index, index + count, ... (EOS appended after trimming, as SeqIO does). Every row is checked
    on every host, so a bad row stops all of a pod's hosts, not one."""
    from scicot_jax.data.tokens import with_eos
    from scicot_jax.data.vocab import get_vocabulary
    from scicot_jax.files import read_jsonl

    vocab = get_vocabulary(vocabulary)
    out = []
    for n, (lineno, obj) in enumerate(read_jsonl(path)):
        if limit is not None and n >= limit:
            break
        for key in [inputs_key] + ([targets_key] if targets_key else []):
            if not isinstance(obj.get(key), str):
                raise ValueError(f"{path}:{lineno}: field {key!r} missing or not a string")
        if n % shard[1] != shard[0]:
            continue
        ex = {
            "id": str(obj.get(id_key, f"line-{lineno}")),
            "inputs_text": obj[inputs_key],
            "inputs": with_eos(vocab.encode(obj[inputs_key]), lengths["inputs"], eos_id),
        }
        if targets_key:
            ex["targets_text"] = obj[targets_key]
            ex["targets"] = with_eos(vocab.encode(obj[targets_key]), lengths["targets"], eos_id)
        out.append(ex)
    return out, vocab


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    """Parses flags and gin, then runs `infer`."""
    shard_flag = dict(type=int, help="this job's shard of the examples (overrides infer.shard_id)")
    return gin_utils.run_binary(
        argv,
        "Predict or score with a T5 student.",
        run,
        {"shard_id": ("infer.shard_id", shard_flag)},
        model_param="infer.model",
    )


def console_entry() -> None:
    gin_utils.console_main(main, "scicot-infer")


if __name__ == "__main__":
    console_entry()
