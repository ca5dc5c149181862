"""Training throughput and MFU: our jitted train step vs Hugging Face T5 (eager, torch.compile).

  python bench/train.py                         # CPU: a small T5, B8, inputs 128 / targets 32
  python bench/train.py --device gpu            # GPU: T5-base, B32, inputs 512 / targets 128, bf16
  python bench/train.py --preset small --batch 16 --input-len 256 --target-len 64 --steps 10

Same architecture on both sides (HF config from `config_to_hf`), same shapes, same optimizer
(Adafactor, constant LR, factored), random full-length numpy batches (no padding, no TF).
tokens/s counts encoder + decoder positions; MFU = model FLOPs (fwd + bwd, from
scicot_jax.model.flops) / time / peak. GPU/TPU peak comes from the vendor table; on CPU there is
no vendor number, so MFU is over the best of square matmuls (XLA and torch.mm, 1024 and 2048) timed
at the same thread count and dtype, each the fastest of >= 10 runs (the least disturbed).
Timing: median step time over --steps steps after --warmup steps (compilation excluded); "CPU ms"
is the process CPU time of a step, steadier than wall time on a shared machine at --threads 1.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

GPU_DEFAULT = dict(
    preset="base", vocab=32128, batch=32, input_len=512, target_len=128, dtype="bfloat16"
)
CPU_DEFAULT = dict(
    preset="tiny",
    vocab=4096,
    batch=8,
    input_len=128,
    target_len=32,
    dtype="float32",
    d_model=256,
    num_heads=4,
    d_kv=64,
    d_ff=1024,
    layers=4,
)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--device", choices=["auto", "cpu", "gpu"], default="auto")
    p.add_argument("--preset", default=None, help="T5Config preset (GPU default: base)")
    p.add_argument("--vocab", type=int, default=None)
    p.add_argument("--batch", type=int, default=None)
    p.add_argument("--input-len", type=int, default=None)
    p.add_argument("--target-len", type=int, default=None)
    p.add_argument("--dtype", default=None, help="activations (CPU default float32, GPU bfloat16)")
    p.add_argument("--steps", type=int, default=5)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--scan-layers", action="store_true")
    p.add_argument("--remat", default="none", choices=["none", "full", "dots"])
    p.add_argument("--attention", default=None, help="xla | dot_product (GPU default)")
    p.add_argument(
        "--threads",
        type=int,
        default=0,
        help="CPU threads for both (0 = library defaults; 1 is fair on a shared box)",
    )
    p.add_argument(
        "--peers",
        default="hf_eager,hf_compile",
        help="comma list of hf_eager, hf_compile ('' = ours only)",
    )
    p.add_argument("--json", default=None, help="also write the results here")
    p.add_argument("--jsonl", default=None, help="also append the results here, one line a run")
    p.add_argument("--label", default="", help="kept with the run; --table-from groups by it")
    p.add_argument(
        "--table-from", default=None, help="print medians and ranges of a --jsonl file's runs, only"
    )
    return p.parse_args(argv)


def set_threads(n: int) -> None:
    """XLA's and torch's thread counts, and the binaries' host malloc: before jax / torch load."""
    from scicot_jax import platforms

    platforms.keep_host_memory()  # as the train binary does (must precede jax's CPU client)

    if n > 0:
        os.environ["XLA_FLAGS"] = (
            os.environ.get("XLA_FLAGS", "")
            + f" --xla_cpu_multi_thread_eigen={'true' if n > 1 else 'false'}"
            f" intra_op_parallelism_threads={n}"
        )
        os.environ["OMP_NUM_THREADS"] = str(n)


def build_config(a: argparse.Namespace, gpu: bool) -> Any:
    from scicot_jax.model import T5Config

    d = dict(GPU_DEFAULT if gpu else CPU_DEFAULT)
    preset = a.preset or d["preset"]
    kw: dict[str, Any] = dict(
        vocab_size=a.vocab or d["vocab"],
        dtype=a.dtype or d["dtype"],
        scan_layers=a.scan_layers,
        remat_policy=a.remat,
        attention_impl=a.attention or ("dot_product" if gpu else "xla"),
    )
    if a.preset is None and not gpu:  # the small CPU shape
        kw.update(
            d_model=d["d_model"],
            num_heads=d["num_heads"],
            d_kv=d["d_kv"],
            d_ff=d["d_ff"],
            num_encoder_layers=d["layers"],
            num_decoder_layers=d["layers"],
        )
    return T5Config.preset(preset, **kw)


def make_batch(batch: int, in_len: int, tgt_len: int, vocab: int, seed: int = 0) -> dict:
    """Full-length random examples (every position is a real token) as numpy int32."""
    import numpy as np

    rng = np.random.default_rng(seed)
    enc = rng.integers(2, vocab, (batch, in_len), dtype=np.int32)
    tgt = rng.integers(2, vocab, (batch, tgt_len), dtype=np.int32)
    dec_in = np.concatenate([np.zeros((batch, 1), np.int32), tgt[:, :-1]], axis=1)
    return {
        "encoder_input_tokens": enc,
        "decoder_input_tokens": dec_in,
        "decoder_target_tokens": tgt,
        "decoder_loss_weights": np.ones_like(tgt),
    }


def ours_setup(config: Any, batch_np: dict, total_steps: int) -> tuple[Any, Any, Any, Any]:
    """(TrainConfig, model spec, setup, device batch) of the project's trainer on one host."""
    from scicot_jax.runtime.partitioning import make_mesh
    from scicot_jax.train.data_iter import to_global
    from scicot_jax.train.optimizers import OptimizerConfig
    from scicot_jax.train.state import t5_spec
    from scicot_jax.train.trainer import TrainConfig, make_setup

    lin = batch_np["encoder_input_tokens"].shape[1]
    lt = batch_np["decoder_target_tokens"].shape[1]
    cfg = TrainConfig(
        model_dir="",
        train_steps=total_steps,
        model=config,
        feature_lengths={"inputs": lin, "targets": lt},
        optimizer=OptimizerConfig(name="adafactor", learning_rate=1e-3),
    )
    spec = t5_spec(config, cfg.feature_lengths)
    su = make_setup(cfg, spec, make_mesh())
    return cfg, spec, su, to_global(batch_np, su.data)


def build_ours(config: Any, batch_np: dict, total_steps: int) -> tuple[Any, Any, Any]:
    """(compiled step, fresh state, device batch) for the project's trainer on one host."""
    from scicot_jax.train.trainer import compile_step, init_state, jit_train_step

    cfg, spec, su, batch = ours_setup(config, batch_np, total_steps)
    state = init_state(su, spec, seed=0)
    return compile_step(jit_train_step(su, spec, cfg), su, state, batch), state, batch


def bench_ours(config: Any, batch_np: dict, steps: int, warmup: int) -> dict[str, float]:
    import jax

    t0 = time.perf_counter()
    step, state, batch = build_ours(config, batch_np, steps + warmup)
    compile_s = time.perf_counter() - t0
    times, cpu = [], []
    for i in range(warmup + steps):
        t, c = time.perf_counter(), time.process_time()
        state, metrics = step(state, batch)
        jax.block_until_ready(metrics["loss"])
        if i >= warmup:
            times.append(time.perf_counter() - t)
            cpu.append(time.process_time() - c)
    return {
        "step_s": statistics.median(times),
        "cpu_s": statistics.median(cpu),
        "compile_s": compile_s,
        "loss": float(metrics["loss"]),
    }


def build_hf(config: Any, batch_np: dict, compiled: bool, gpu: bool) -> Any:
    """A no-argument function running one Hugging Face train step; returns the loss tensor."""
    import torch
    import transformers
    from transformers.optimization import Adafactor

    from scicot_jax.checkpoints.hf import config_to_hf

    hf_cfg = transformers.T5Config(**config_to_hf(config))
    hf_cfg.dropout_rate = 0.0
    device = "cuda" if gpu else "cpu"
    model = transformers.T5ForConditionalGeneration(hf_cfg).to(device).train()
    opt = Adafactor(
        model.parameters(),
        lr=1e-3,
        relative_step=False,
        scale_parameter=True,
        warmup_init=False,
        clip_threshold=1.0,
        decay_rate=-0.8,
    )
    fwd = torch.compile(model) if compiled else model
    t = {k: torch.as_tensor(v, dtype=torch.long, device=device) for k, v in batch_np.items()}
    use_bf16 = config.dtype == "bfloat16"

    def one_step() -> float:
        with torch.autocast(device, dtype=torch.bfloat16, enabled=use_bf16):
            out = fwd(
                input_ids=t["encoder_input_tokens"],
                decoder_input_ids=t["decoder_input_tokens"],
                labels=t["decoder_target_tokens"],
            )
        out.loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        return out.loss.detach()

    return one_step


def bench_hf(
    config: Any, batch_np: dict, steps: int, warmup: int, compiled: bool, gpu: bool
) -> dict[str, float]:
    import torch

    one_step = build_hf(config, batch_np, compiled, gpu)
    t0 = time.perf_counter()
    one_step()  # compiles under torch.compile
    if gpu:
        torch.cuda.synchronize()
    first_s = time.perf_counter() - t0
    times, cpu = [], []
    for i in range(warmup + steps):
        s, c = time.perf_counter(), time.process_time()
        loss = one_step()
        if gpu:
            torch.cuda.synchronize()
        if i >= warmup:
            times.append(time.perf_counter() - s)
            cpu.append(time.process_time() - c)
    return {
        "step_s": statistics.median(times),
        "cpu_s": statistics.median(cpu),
        "compile_s": first_s,
        "loss": float(loss),
    }


def _best_seconds(fn: Any, min_reps: int = 10, min_s: float = 1.0) -> float:
    """Fastest of >= min_reps calls spanning >= min_s: the least disturbed run on a shared box."""
    fn()
    best, reps, t_end = float("inf"), 0, time.perf_counter() + min_s
    while reps < min_reps or time.perf_counter() < t_end:
        t = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t)
        reps += 1
    return best


def cpu_matmul_peak(dtype: str, sizes: tuple[int, ...] = (1024, 2048)) -> dict[str, float]:
    """FLOP/s of square matmuls at this thread count and dtype, by XLA (jit) and by torch.mm.

    The CPU's practical peak is the best of them: the step's dots run on the same kernels
    (XLA:CPU's, and torch's for the peers), so MFU over it is at most ~100 % for either side.
    """
    import jax
    import jax.numpy as jnp

    out = {}
    f = jax.jit(lambda a: a @ a)
    for n in sizes:
        x = jax.random.normal(jax.random.key(0), (n, n), dtype)
        out[f"xla {n}"] = 2 * n**3 / _best_seconds(lambda x=x: f(x).block_until_ready())
    try:
        import torch
    except ImportError:
        return out
    for n in sizes:
        y = torch.randn(n, n, dtype=getattr(torch, str(jnp.dtype(dtype))))
        out[f"torch {n}"] = 2 * n**3 / _best_seconds(lambda y=y: torch.mm(y, y))
    return out


def main(argv: list[str] | None = None) -> dict[str, Any]:
    a = parse_args(argv)
    if a.table_from:
        print("\n".join(runs_table(a.table_from)))
        return {}
    set_threads(a.threads)
    import jax

    gpu = a.device == "gpu" or (a.device == "auto" and jax.default_backend() == "gpu")
    if a.threads > 0:
        import torch

        torch.set_num_threads(a.threads)
    from scicot_jax.model import flops_per_example, num_params
    from scicot_jax.runtime.metrics import peak_flops_per_device

    config = build_config(a, gpu)
    d = GPU_DEFAULT if gpu else CPU_DEFAULT
    b, lin, lt = (
        a.batch or d["batch"],
        a.input_len or d["input_len"],
        a.target_len or d["target_len"],
    )
    batch = make_batch(b, lin, lt, config.vocab_size)
    fpe = flops_per_example(config, lin, lt, training=True)
    peak = peak_flops_per_device()
    peak_kind = jax.devices()[0].device_kind
    probes: dict[str, float] = {}
    if peak is None:
        probes = cpu_matmul_peak(config.dtype)
        best = max(probes, key=probes.get)
        peak, peak_kind = probes[best], f"CPU: best measured {config.dtype} matmul, {best}"
    results: dict[str, dict[str, float]] = {"ours": bench_ours(config, batch, a.steps, a.warmup)}
    for peer in filter(None, a.peers.split(",")):
        if peer not in ("hf_eager", "hf_compile"):
            raise SystemExit(f"--peers: unknown peer {peer!r}")
        results[peer] = bench_hf(config, batch, a.steps, a.warmup, peer == "hf_compile", gpu)
    tokens = b * (lin + lt)
    for r in results.values():
        r["tokens_per_s"] = tokens / r["step_s"]
        r["mfu"] = fpe * b / r["step_s"] / peak
    out = {
        "device": peak_kind,
        "backend": jax.default_backend(),
        "params": num_params(config),
        "config": config.to_dict(),
        "batch": b,
        "input_len": lin,
        "target_len": lt,
        "flops_per_example": fpe,
        "peak_flops": peak,
        "peak_probes": probes,
        "threads": a.threads,
        "label": a.label,
        "results": results,
        "ratios": {
            f"ours/{k}": results["ours"]["tokens_per_s"] / v["tokens_per_s"]
            for k, v in results.items()
            if k != "ours"
        },
    }
    print(
        f"{out['params'] / 1e6:.1f}M params, batch {b}, inputs {lin} / targets {lt}, "
        f"{config.dtype}, peak {peak / 1e12:.3f} TFLOP/s ({peak_kind})"
    )
    if probes:
        shown = ", ".join(f"{k} {v / 1e9:.1f}" for k, v in probes.items())
        print(f"matmul probes (GFLOP/s): {shown}")
    print(
        f"{'system':<12}{'step ms':>10}{'CPU ms':>9}{'tokens/s':>12}{'MFU':>8}{'compile s':>11}"
        f"{'loss':>8}"
    )
    for k, r in results.items():
        print(
            f"{k:<12}{r['step_s'] * 1e3:>10.1f}{r['cpu_s'] * 1e3:>9.1f}{r['tokens_per_s']:>12.0f}"
            f"{r['mfu']:>8.1%}{r['compile_s']:>11.1f}{r['loss']:>8.3f}"
        )
    for k, v in out["ratios"].items():
        print(f"{k}: {v:.2f}x tokens/s")
    if a.json:
        Path(a.json).write_text(json.dumps(out, indent=2))
    if a.jsonl:
        with open(a.jsonl, "a") as f:
            f.write(json.dumps(out) + "\n")
    return out


def runs_table(path: str) -> list[str]:
    """Per label and thread count: each system's median step ms, ours' tokens/s ratios; ranges."""
    runs = [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]
    lines = []
    for label, threads in sorted({(r.get("label", ""), r["threads"]) for r in runs}):
        group = [r for r in runs if (r.get("label", ""), r["threads"]) == (label, threads)]
        cells = []
        for system in group[0]["results"]:
            ms = [r["results"][system]["step_s"] * 1e3 for r in group]
            cells.append(f"{system} {_median_range(ms, '.1f')} ms")
        for ratio in group[0]["ratios"]:
            cells.append(f"{ratio} {_median_range([r['ratios'][ratio] for r in group], '.2f')}x")
        head = f"{label}: " if label else ""
        lines.append(
            f"{head}threads {threads or 'default'}, {len(group)} runs: " + "; ".join(cells)
        )
    return lines


def _median_range(values: list[float], fmt: str) -> str:
    return f"{statistics.median(values):{fmt}} [{min(values):{fmt}}-{max(values):{fmt}}]"


if __name__ == "__main__":
    main()
