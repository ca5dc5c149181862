"""One-call GPU benchmark (H100/H200, ~8 minutes): training and sampling against Hugging Face.

    python bench/gpu.py                      # or: make bench-gpu  -> bench_gpu.json
    python bench/gpu.py --shrink --out x.json   # CPU smoke run of the same code (tests use it)

Train: T5-small and T5-base (vocab 32128, inputs 512 / targets 128, bf16, batch 64), our jitted
train step vs Hugging Face eager and torch.compile in the same run: tokens/s, MFU against the
chip's vendor peak (runtime.metrics table), ratios (`bench/train.py`). Decode: sampling, batch
256, inputs 256, 128 new tokens, ours vs `transformers` generate, same weights
(`bench/decode.py`). Writes one JSON with every figure, the device, versions and wall times.
Needs jax and torch (CUDA builds for a GPU run) and transformers; no TensorFlow or seqio.
`--shrink` runs tiny shapes (HF eager only, no torch.compile) so the CPU test stays fast.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import sys
import time
from pathlib import Path
from types import ModuleType
from typing import Any

HERE = Path(__file__).resolve().parent
TRAIN = dict(vocab=32128, batch=64, input_len=512, target_len=128, dtype="bfloat16")
DECODE = dict(vocab=None, batch=256, input_len=256, new_tokens=128, dtype="bfloat16")
SHRUNK_TRAIN = dict(vocab=128, batch=2, input_len=16, target_len=8, dtype="float32")
SHRUNK_DECODE = dict(vocab=128, batch=2, input_len=8, new_tokens=4, dtype="float32")


def load_bench(name: str) -> ModuleType:
    """bench/<name>.py as a module (bench/ is a folder of scripts, not a package)."""
    spec = importlib.util.spec_from_file_location(f"bench_{name}", HERE / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def train_case(preset: str, shape: dict, steps: int, warmup: int, peers: str, device: str) -> dict:
    """bench/train.py for one preset and shape; its result dict."""
    argv = [
        f"--device={device}", f"--preset={preset}", f"--vocab={shape['vocab']}",
        f"--batch={shape['batch']}", f"--input-len={shape['input_len']}",
        f"--target-len={shape['target_len']}", f"--dtype={shape['dtype']}",
        f"--steps={steps}", f"--warmup={warmup}", f"--peers={peers}",
    ]  # fmt: skip
    return load_bench("train").main(argv)


def decode_case(preset: str, shape: dict, repeats: int, hf_device: str | None) -> dict:
    """bench/decode.py's timed sampling case for one preset; its result dict."""
    decode = load_bench("decode")
    args = decode.parse_args([f"--repeats={repeats}"])
    return decode.run_case(
        args, preset, shape["vocab"], shape["batch"], shape["input_len"], shape["new_tokens"],
        shape["dtype"], hf_device,
    )  # fmt: skip


def main(argv: list[str] | None = None) -> dict[str, Any]:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--out", default="bench_gpu.json")
    p.add_argument("--shrink", action="store_true", help="tiny shapes: a CPU smoke run")
    p.add_argument("--presets", default="small,base")
    p.add_argument("--steps", type=int, default=10, help="timed train steps per system")
    p.add_argument("--repeats", type=int, default=3, help="timed decode runs per system")
    p.add_argument("--budget_s", type=float, default=480.0, help="warn when the run takes longer")
    a = p.parse_args(argv)
    start = time.perf_counter()
    sys.path.insert(0, str(HERE.parent))
    import jax

    gpu = jax.default_backend() == "gpu"
    if not gpu and not a.shrink:
        raise SystemExit("bench/gpu.py: JAX sees no GPU (use --shrink for a CPU smoke run)")
    import torch
    import transformers

    device = "gpu" if gpu else "cpu"
    hf_device = "cuda" if gpu and torch.cuda.is_available() else ("cpu" if not gpu else None)
    train_shape, decode_shape = (SHRUNK_TRAIN, SHRUNK_DECODE) if a.shrink else (TRAIN, DECODE)
    presets = ["tiny"] if a.shrink else a.presets.split(",")
    peers = "hf_eager" if a.shrink else "hf_eager,hf_compile"
    out: dict[str, Any] = {
        "device": jax.devices()[0].device_kind,
        "backend": jax.default_backend(),
        "versions": {"jax": jax.__version__, "torch": torch.__version__,
                     "transformers": transformers.__version__},
        "shrunk": a.shrink,
        "train": {},
        "decode": {},
        "wall_s": {},
    }  # fmt: skip
    for preset in presets:
        t = time.perf_counter()
        r = train_case(preset, train_shape, 1 if a.shrink else a.steps, 1 if a.shrink else 3,
                       peers, device)  # fmt: skip
        out["train"][preset] = {k: r[k] for k in ("params", "batch", "input_len", "target_len",
                                                  "peak_flops", "results", "ratios")}  # fmt: skip
        out["wall_s"][f"train_{preset}"] = time.perf_counter() - t
    for preset in presets:
        t = time.perf_counter()
        out["decode"][preset] = decode_case(preset, decode_shape, a.repeats, hf_device)
        out["wall_s"][f"decode_{preset}"] = time.perf_counter() - t
    out["wall_s"]["total"] = time.perf_counter() - start
    if out["wall_s"]["total"] > a.budget_s:
        print(f"warning: took {out['wall_s']['total']:.0f} s, over the {a.budget_s:.0f} s budget")
    Path(a.out).write_text(json.dumps(out, indent=2, default=float))
    print(f"wrote {a.out} ({out['wall_s']['total']:.0f} s)")
    return out


if __name__ == "__main__":
    main()
