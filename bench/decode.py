"""Batched sampling throughput: our cached `generate` vs Hugging Face `generate`, same weights.

  python bench/decode.py                       # CPU: small preset, vocab 4096, B16, in 64, 32 new
  python bench/decode.py --device gpu          # GPU: small and base, B256, in 256, 128 new (bf16)
  python bench/decode.py --preset base --batch 8 --input-len 32 --new-tokens 16
  python bench/decode.py --workload mixed      # Stage-1 generation + MoRSD scoring, before/after
  python bench/decode.py --workload samples --num-decodes 8   # shared vs repeated cross K/V

Both models hold the same random weights (ours exported with `export_hf`), see the same inputs
and sample exactly `--new-tokens` tokens per row (HF: min_new_tokens forbids EOS; ours runs its
while_loop to the end as long as one row is still going, which the script checks). Throughput is
batch * new tokens / median wall time over `--repeats` timed runs after one warm-up run
(compilation and first-call overheads excluded); the two are timed alternately.

`--workload mixed` times `runtime.inference` on the pipeline's own workloads with a briefly
trained tiny student (so outputs end at data-dependent lengths): Stage-1 greedy generation over
the demo's train/validation/test questions (synthetic_compass) and over multi-CoT SVAMP's
(real, mixed-length questions, when ../shared/data is present), and MoRSD scoring of every
question's D=4 rationales. "before" is the previous algorithm (every batch padded to the full
input length in the caller's order, fetched before the next is dispatched), reproduced here;
"after" is `inference.predict` / `inference.score`. Both give the same greedy outputs (checked).

`--workload samples` times `generate(num_decodes=n)`, whose samples share one cross-attention
K/V per input, against the same sampler with the cross K/V repeated n times (the previous way),
and checks that both draw the same samples.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

SHARED = Path(__file__).resolve().parents[1] / "../shared/data"
GPU_CASES = [("small", 256, 256, 128), ("base", 256, 256, 128)]  # preset, batch, input, new


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--device", choices=["auto", "cpu", "gpu"], default="auto")
    p.add_argument("--preset", default=None, help="T5Config preset (default: small)")
    p.add_argument("--vocab", type=int, default=None, help="vocab size (CPU default 4096)")
    p.add_argument("--batch", type=int, default=None)
    p.add_argument("--input-len", type=int, default=None)
    p.add_argument("--new-tokens", type=int, default=None)
    p.add_argument("--dtype", default=None, help="activations (CPU default float32, GPU bfloat16)")
    p.add_argument("--top-k", type=int, default=0, help="0 = full distribution (both sides)")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument(
        "--threads",
        type=int,
        default=0,
        help="CPU threads for both (0 = library defaults; 1 pins XLA and torch to one thread, "
        "the fair choice on a shared, oversubscribed machine)",
    )
    p.add_argument("--no-hf", action="store_true", help="time only our generate")
    p.add_argument("--workload", choices=["random", "mixed", "samples"], default="random")
    p.add_argument("--num-decodes", type=int, default=8, help="samples: samples per input")
    p.add_argument("--train-steps", type=int, default=200, help="mixed: student training steps")
    p.add_argument("--eval-batch", type=int, default=64, help="mixed: inference batch size")
    p.add_argument("--data", default="compass,svamp", help="mixed: compass and/or svamp")
    p.add_argument("--parts", default="generate,score", help="mixed: generate and/or score")
    return p.parse_args(argv)


def ours_runner(config, params, inputs, new_tokens: int, top_k: int) -> Callable[[int], Any]:
    """seed -> sampled tokens [B, new_tokens] from our jitted, cached while_loop sampler."""
    import jax
    import numpy as np

    from scicot_jax.model.decoding import DecodeConfig, generate

    @jax.jit
    def sample(params, tokens, rng):
        out, _ = generate(
            params,
            config,
            tokens,
            DecodeConfig(max_decode_length=new_tokens, method="sample", top_k=top_k),
            rng=rng,
        )
        return out[:, 0]

    params, tokens = jax.device_put(params), jax.device_put(inputs)
    return lambda seed: np.asarray(
        jax.block_until_ready(sample(params, tokens, jax.random.key(seed)))
    )


def hf_runner(
    hf_dir: Path, inputs, new_tokens: int, top_k: int, dtype: str, device: str
) -> Callable[[int], Any]:
    """seed -> transformers' sampled tokens (KV cache, EOS forbidden until new_tokens)."""
    import torch
    import transformers

    transformers.logging.set_verbosity_error()  # v5 warns about our (correctly) untied lm_head
    transformers.logging.disable_progress_bar()
    torch_dtype = {"float32": torch.float32, "bfloat16": torch.bfloat16}[dtype]
    model = transformers.T5ForConditionalGeneration.from_pretrained(hf_dir, dtype=torch_dtype)
    model = model.to(device).eval()
    ids = torch.from_numpy(inputs).long().to(device)
    kwargs = dict(
        input_ids=ids,
        attention_mask=(ids != 0).long(),
        do_sample=True,
        top_k=top_k,
        top_p=1.0,
        temperature=1.0,
        num_beams=1,
        use_cache=True,
        max_new_tokens=new_tokens,
        min_new_tokens=new_tokens,
    )

    def run(seed: int):
        torch.manual_seed(seed)
        with torch.inference_mode():
            out = model.generate(**kwargs)
        if device == "cuda":
            torch.cuda.synchronize()
        if out.shape[1] != new_tokens + 1:  # + decoder start token
            raise RuntimeError(f"HF generated {out.shape[1] - 1} tokens, expected {new_tokens}")
        return out

    return run


def timed(fn: Callable[[int], Any], seed: int) -> tuple[float, Any]:
    start = time.perf_counter()
    out = fn(seed)
    return time.perf_counter() - start, out


def run_case(
    args,
    preset: str,
    vocab: int | None,
    batch: int,
    input_len: int,
    new_tokens: int,
    dtype: str,
    hf_device: str | None,
) -> dict[str, Any]:
    """Times one shape; prints a line and returns tokens/s, median seconds and the ratio."""
    import jax
    import numpy as np

    from scicot_jax.checkpoints.hf import export_hf
    from scicot_jax.model import T5Config, init_params

    overrides = {"dtype": dtype, "dropout_rate": 0.0}
    if vocab:
        overrides["vocab_size"] = vocab
    config = T5Config.preset(preset, **overrides)
    params = jax.device_get(init_params(config, jax.random.key(0)))
    inputs = np.random.default_rng(0).integers(2, config.vocab_size, (batch, input_len), np.int32)
    runners = {"ours": ours_runner(config, params, inputs, new_tokens, args.top_k)}
    with tempfile.TemporaryDirectory() as tmp:
        if hf_device is not None:
            export_hf(config, params, tmp)
            runners["HF"] = hf_runner(Path(tmp), inputs, new_tokens, args.top_k, dtype, hf_device)
        del params
        for run in runners.values():
            run(0)  # warm-up: compilation and first-call allocations
        # Interleaved, so both see the same background load on a shared machine.
        times: dict[str, list[float]] = {name: [] for name in runners}
        for seed in range(1, args.repeats + 1):
            for name, run in runners.items():
                seconds, out = timed(run, seed)
                times[name].append(seconds)
                if name == "ours":
                    steps = int((out != 0).any(axis=0).sum())  # columns any row filled
                    if steps != new_tokens:
                        print(f"  warning: our loop ran {steps} of {new_tokens} steps")
    median = {name: statistics.median(ts) for name, ts in times.items()}
    rate = {name: batch * new_tokens / s for name, s in median.items()}
    threads = f", {args.threads} thread(s)" if args.threads else ""
    line = (
        f"{preset} (vocab {config.vocab_size}, {dtype}) batch {batch} input {input_len} "
        f"new {new_tokens} on {jax.devices()[0].platform}{threads}: "
        f"ours {rate['ours']:,.0f} tok/s ({median['ours'] * 1e3:.0f} ms)"
    )
    if "HF" in rate:
        line += (
            f" | HF {rate['HF']:,.0f} tok/s ({median['HF'] * 1e3:.0f} ms, torch {hf_device})"
            f" | ratio {rate['ours'] / rate['HF']:.2f}x"
        )
    print(line, flush=True)
    out: dict[str, Any] = {
        "preset": preset, "vocab": config.vocab_size, "dtype": dtype, "batch": batch,
        "input_len": input_len, "new_tokens": new_tokens, "tokens_per_s": rate, "median_s": median,
    }  # fmt: skip
    if "HF" in rate:
        out["ratio_to_hf_generate"] = rate["ours"] / rate["HF"]
    return out


def legacy_predict(params, config, mesh, inputs, *, input_length, decode, batch_size):
    """The pre-bucketing inference.predict (greedy): full-length padding, input order, sync."""
    import jax
    import numpy as np

    from scicot_jax.data.tokens import pad_rows
    from scicot_jax.model.decoding import generate
    from scicot_jax.runtime import inference
    from scicot_jax.runtime import partitioning as part

    out = []
    for a in range(0, len(inputs), batch_size):
        rows = list(inputs[a : a + batch_size])
        enc = pad_rows(rows + [[]] * (batch_size - len(rows)), input_length, config.pad_id)
        toks, scores = generate(
            params, config, jax.device_put(enc, part.batch_sharding(mesh)), decode
        )
        toks, scores = np.asarray(jax.device_get(toks)), np.asarray(jax.device_get(scores))
        out += [
            ([inference._cut(t, config.eos_id, config.pad_id) for t in toks[j]], list(scores[j]))
            for j in range(len(rows))
        ]
    return out


def legacy_score(params, config, mesh, inputs, targets, *, input_length, target_length, batch_size):
    """The pre-bucketing inference.score: full-length padding, input order, sync."""
    import jax

    from scicot_jax.data.tokens import pad_rows, shift_right
    from scicot_jax.model.scoring import score

    out = []
    for a in range(0, len(inputs), batch_size):
        pad = [[]] * (batch_size - len(inputs[a : a + batch_size]))
        enc = pad_rows(list(inputs[a : a + batch_size]) + pad, input_length, config.pad_id)
        tgt = pad_rows(list(targets[a : a + batch_size]) + pad, target_length, config.pad_id)
        batch = {
            "encoder_input_tokens": enc,
            "decoder_input_tokens": shift_right(tgt, config.decoder_start_id),
            "decoder_target_tokens": tgt,
        }
        res = jax.device_get(score(params, config, batch))
        out += [{"mean_logprob": float(res["mean_logprob"][j])} for j in range(len(enc) - len(pad))]
    return out


def mixed_data(name: str, tmp: Path, student_cfg: Any) -> tuple[Any, dict[str, list], list]:
    """(student, {split: questions}, D=4 (question, rationale) pairs of the train split)."""
    from scicot_jax.data import formats, importers, synthetic
    from scicot_jax.data.cards import load_card
    from scicot_jax.data.sources import read_examples
    from scicot_jax.pipeline import vocab_step
    from scicot_jax.pipeline.student import T5Student

    if name == "compass":  # the demo's splits and limits
        card = load_card("synthetic_compass")
        limits = {"train": 1000, "validation": 200, "test": 300}
        splits = {s: list(read_examples(card, s))[:n] for s, n in limits.items()}
        pairs = [
            formats.stage1(ex, synthetic.write_rationale("compass", ex, i))
            for ex in splits["train"] for i in range(4)
        ]  # fmt: skip
        student = T5Student(dataclasses.replace(student_cfg, vocab=None), card)
    else:
        run = importers.svamp_multi_cot()
        card = run.card
        splits = {s: list(read_examples(card, s)) for s in ("train", "validation", "test")}
        by_id = {ex.id: ex for ex in run.examples}
        pairs = [
            formats.stage1(by_id[r.example_id], r.rationale)
            for r in run.records
            if r.sample_index < 4
        ]
        student = T5Student(student_cfg, card)
        texts = vocab_step.corpus(run.examples, [r.rationale for r in run.records])
        student.use_vocab(vocab_step.train(tmp, texts, 1024))
    questions = {s: [formats.render_question(ex) for ex in exs] for s, exs in splits.items()}
    return student, questions, pairs


def run_mixed(args) -> None:
    """Stage-1 generation and MoRSD scoring, previous vs bucketed/pipelined inference."""
    for name in args.data.split(","):
        if name == "svamp" and not (SHARED / "svamp_multi_cot").is_dir():
            print("svamp: skipped (../shared/data absent)")
            continue
        with tempfile.TemporaryDirectory() as tmp:
            mixed_case(name, args, Path(tmp))


def mixed_case(name: str, args, tmp: Path) -> None:
    """Train a Stage-1 student on one data set, then time generation and scoring both ways."""
    import numpy as np

    from scicot_jax.model.decoding import DecodeConfig
    from scicot_jax.pipeline.config import StudentConfig
    from scicot_jax.runtime import inference

    cfg = StudentConfig(steps=args.train_steps, eval_batch_size=args.eval_batch)
    student, questions, pairs = mixed_data(name, tmp, cfg)
    ckpt = student.train(pairs, tmp / "stage1", stage="stage1")["checkpoint"]
    params, config, mesh = student.params(ckpt), student.model_for(ckpt), student.mesh
    max_new = student.decode_length(ckpt)
    rows, in_len = student._tokens([q for qs in questions.values() for q in qs], student.max_inputs)
    enc, enc_len = student._tokens([q for q, _ in pairs], student.max_inputs)
    tgt, tgt_len = student._tokens([r for _, r in pairs], student.max_targets)
    greedy = DecodeConfig(max_decode_length=max_new)
    kw = dict(input_length=in_len, decode=greedy, batch_size=args.eval_batch)
    skw = dict(input_length=enc_len, target_length=tgt_len, batch_size=args.eval_batch)
    gen = {
        "before": lambda: legacy_predict(params, config, mesh, rows, **kw),
        "after": lambda: inference.predict(params, config, mesh, rows, **kw),
    }
    sco = {
        "before": lambda: legacy_score(params, config, mesh, enc, tgt, **skw),
        "after": lambda: inference.score(params, config, mesh, enc, tgt, **skw),
    }
    parts = {
        "generate": ("Stage-1 generation", gen, "generated"),
        "score": ("MoRSD scoring", sco, "target"),
    }
    for label, fns, unit in (parts[p] for p in args.parts.split(",")):
        outs = {k: f() for k, f in fns.items()}  # warm-up: compiles every shape
        if label.startswith("Stage"):
            same = [o[0] for o in outs["before"]] == [o[0] for o in outs["after"]]
            tokens = sum(len(o[0][0]) + 1 for o in outs["after"])  # + EOS
            lens = [len(o[0][0]) for o in outs["after"]]
            detail = f"outputs {np.mean(lens):.0f} mean / {max(lens)} max tokens, identical: {same}"
        else:
            diff = max(abs(a["mean_logprob"] - b["mean_logprob"]) for a, b in zip(*outs.values()))
            tokens = sum(len(t) for t in tgt)
            detail = f"max |score diff| {diff:.1e}"
        times = {k: [] for k in fns}
        for _ in range(args.repeats):
            for k, f in fns.items():
                seconds, _ = timed(lambda _s, f=f: f(), 0)
                times[k].append(seconds)
        med = {k: statistics.median(v) for k, v in times.items()}
        spread = {k: (min(v), max(v)) for k, v in times.items()}
        n = len(rows) if label.startswith("Stage") else len(enc)
        print(
            f"{name} {label}: {n} examples, batch {args.eval_batch}, {detail}\n"
            + "".join(
                f"  {k:<6} {med[k]:7.2f} s (min {spread[k][0]:.2f}, max {spread[k][1]:.2f}) "
                f"{tokens / med[k]:>9,.0f} {unit} tok/s\n"
                for k in fns
            )
            + f"  speedup x{med['before'] / med['after']:.2f} (median of {args.repeats})",
            flush=True,
        )


def repeated_kv_sampler(config, n: int, max_len: int) -> Callable:
    """The previous sampler: one encode, then every cache leaf (cross K/V too) repeated n times."""
    import functools

    import jax

    from scicot_jax.model import decoding

    @jax.jit
    def sample(params, enc, rng):
        logits, cache, run = decoding.prefill(params, config, enc, None, max_len)
        logits, cache, enc_n = decoding._repeat_batch((logits, cache, enc), n)
        choose = functools.partial(decoding.sample_token, temperature=1.0)
        step = lambda tokens, cache: run(tokens, cache, None, enc_n)
        tokens, _, _ = decoding.sample_loop(
            step, logits, cache, rng, max_len, config.eos_id, config.pad_id, choose
        )
        return tokens.reshape(enc.shape[0], n, max_len)

    return sample


def run_samples(args) -> None:
    """num_decodes samples per input: shared cross K/V (now) vs n repeated copies (before)."""
    import jax
    import numpy as np

    from scicot_jax.model import T5Config, init_params
    from scicot_jax.model.decoding import DecodeConfig, generate

    preset, n = args.preset or "small", args.num_decodes
    batch, in_len = args.batch or 4, args.input_len or 256
    new = args.new_tokens or 16
    dtype = args.dtype or ("bfloat16" if jax.default_backend() == "gpu" else "float32")
    config = T5Config.preset(preset, dtype=dtype, vocab_size=args.vocab or 4096, dropout_rate=0.0)
    params = init_params(config, jax.random.key(0))
    enc = jax.device_put(
        np.random.default_rng(0).integers(2, config.vocab_size, (batch, in_len), np.int32)
    )
    shared = jax.jit(
        lambda p, e, r: generate(p, config, e, DecodeConfig(max_decode_length=new, method="sample", num_decodes=n), rng=r)[0]
    )  # fmt: skip
    runs = {"before": repeated_kv_sampler(config, n, new), "after": shared}
    outs = {k: np.asarray(f(params, enc, jax.random.key(1))) for k, f in runs.items()}  # warm-up
    same = bool(np.array_equal(outs["before"], outs["after"]))
    times: dict[str, list[float]] = {k: [] for k in runs}
    for seed in range(2, 2 + args.repeats):
        for k, f in runs.items():
            t = time.perf_counter()
            jax.block_until_ready(f(params, enc, jax.random.key(seed)))
            times[k].append(time.perf_counter() - t)
    med = {k: statistics.median(v) for k, v in times.items()}
    tokens = batch * n * new
    print(
        f"{preset} ({dtype}) {batch} inputs x {n} samples, input {in_len}, {new} new tokens on "
        f"{jax.default_backend()}; same samples: {same}\n"
        + "".join(
            f"  {k:<6} {'repeated' if k == 'before' else 'shared':<8} cross K/V "
            f"{med[k] * 1e3:8.0f} ms (min {min(v) * 1e3:.0f}, max {max(v) * 1e3:.0f}) "
            f"{tokens / med[k]:>9,.0f} tok/s\n"
            for k, v in times.items()
        )
        + f"  speedup x{med['before'] / med['after']:.2f} (median of {args.repeats})",
        flush=True,
    )


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.device == "cpu":
        os.environ["JAX_PLATFORMS"] = "cpu"  # before jax is imported
    if args.threads == 1:
        flags = "--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1"
        os.environ["XLA_FLAGS"] = f"{os.environ.get('XLA_FLAGS', '')} {flags}".strip()
    elif args.threads > 1 and args.device != "gpu":
        print(f"note: --threads {args.threads} limits torch only; XLA uses its own pool")
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    import jax

    on_gpu = jax.default_backend() == "gpu"
    if args.workload in ("mixed", "samples"):
        (run_mixed if args.workload == "mixed" else run_samples)(args)
        return 0
    if args.device == "gpu" and not on_gpu:
        print("error: --device gpu but JAX sees no GPU", file=sys.stderr)
        return 1
    hf_device: str | None = None
    if not args.no_hf:
        import torch

        if args.threads:
            torch.set_num_threads(args.threads)
        hf_device = "cuda" if on_gpu else "cpu"
        if on_gpu and not torch.cuda.is_available():
            print("note: torch has no CUDA here; skipping HF (a CPU run is no comparison)")
            hf_device = None
    dtype = args.dtype or ("bfloat16" if on_gpu else "float32")
    explicit = any(
        v is not None for v in (args.preset, args.batch, args.input_len, args.new_tokens)
    )
    if on_gpu and not explicit:
        cases = [(p, args.vocab, b, i, n) for p, b, i, n in GPU_CASES]
    else:
        cases = [
            (
                args.preset or "small",
                args.vocab or (None if on_gpu else 4096),
                args.batch or (256 if on_gpu else 16),
                args.input_len or (256 if on_gpu else 64),
                args.new_tokens or (128 if on_gpu else 32),
            )
        ]
    for preset, vocab, batch, input_len, new_tokens in cases:
        run_case(args, preset, vocab, batch, input_len, new_tokens, dtype, hf_device)
    return 0


if __name__ == "__main__":
    sys.exit(main())
