"""Batched sampling throughput: our cached `generate` vs Hugging Face `generate`, same weights.

  python bench/decode.py                       # CPU: small preset, vocab 4096, B16, in 64, 32 new
  python bench/decode.py --device gpu          # GPU: small and base, B256, in 256, 128 new (bf16)
  python bench/decode.py --preset base --batch 8 --input-len 32 --new-tokens 16

Both models hold the same random weights (ours exported with `export_hf`), see the same inputs
and sample exactly `--new-tokens` tokens per row (HF: min_new_tokens forbids EOS; ours runs its
while_loop to the end as long as one row is still going, which the script checks). Throughput is
batch * new tokens / median wall time over `--repeats` timed runs after one warm-up run
(compilation and first-call overheads excluded); the two are timed alternately.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

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
    return p.parse_args(argv)


def ours_runner(config, params, inputs, new_tokens: int, top_k: int) -> Callable[[int], Any]:
    """seed -> sampled tokens [B, new_tokens] from our jitted, cached while_loop sampler."""
    import jax
    import numpy as np

    from scicot_jax.model.decoding import generate

    @jax.jit
    def sample(params, tokens, rng):
        out, _ = generate(
            params,
            config,
            tokens,
            max_decode_length=new_tokens,
            method="sample",
            top_k=top_k,
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
) -> None:
    import jax
    import numpy as np

    from scicot_jax.model import T5Config, init_params
    from scicot_jax.model.hf import export_hf

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
