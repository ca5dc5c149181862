"""Two variants of the CPU bench's train step in one process, timed step by step in turn.

  python bench/cpu_step_ab.py --compare copy-insertion   # compile_step's CPU options vs none
  python bench/cpu_step_ab.py --compare bias-gradient    # position-bias gradient: reduce vs dot
  python bench/cpu_step_ab.py --compare embedding-lookup # a table lookup per stack vs one
  python bench/cpu_step_ab.py --compare kernel-gradient  # float32 kernel gradients, tried form

On a shared or even an idle 2-core machine the step's wall time spreads by +-15 % from one
process to the next, more than most single changes are worth. Here both variants are compiled
in one process and alternate (A B, B A, ...) on the same batch, so drift and load fall on both
alike; each prints its median and fastest wall ms, median CPU ms and the losses it saw.
Same model, shapes and optimizer as bench/train.py.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable
from contextlib import nullcontext
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import train as bench_train  # noqa: E402  (bench/train.py: config, batch, threads)
import variants as forms  # noqa: E402  (bench/variants.py: the replaced forms)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument(
        "--compare",
        required=True,
        choices=["copy-insertion", "bias-gradient", "embedding-lookup", "kernel-gradient"],
    )
    p.add_argument("--rounds", type=int, default=12, help="timed steps of each variant")
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--threads", type=int, default=0, help="as bench/train.py (0 = defaults)")
    return p.parse_args(argv)


def variants(compare: str) -> list[tuple[str, Callable[[], Any], dict | None]]:
    """(name, tracing context, compiler options) of variant A, then B."""
    from scicot_jax import platforms

    cpu = platforms.compiler_options("cpu")
    if compare == "copy-insertion":
        return [
            ("no compiler options", nullcontext, None),
            ("compile_step's CPU options", nullcontext, cpu),
        ]
    if compare == "kernel-gradient":
        return [
            ("kernel gradient: x^T g", nullcontext, cpu),
            ("kernel gradient: oriented", forms.oriented_kernel_gradient, cpu),
        ]
    if compare == "embedding-lookup":
        return [
            ("a lookup per stack", forms.lookup_per_stack, cpu),
            ("one lookup for both", nullcontext, cpu),
        ]
    return [
        ("bias gradient: reduce", forms.plain_bias_add, cpu),
        ("bias gradient: dot", nullcontext, cpu),
    ]


def main(argv: list[str] | None = None) -> dict[str, dict[str, Any]]:
    a = parse_args(argv)
    bench_train.set_threads(a.threads)
    import flax.linen as nn
    import jax

    from scicot_jax.train.trainer import init_state, jit_train_step

    config = bench_train.build_config(bench_train.parse_args(["--peers", ""]), gpu=False)
    batch_np = bench_train.make_batch(8, 128, 32, config.vocab_size)
    cfg, spec, su, batch = bench_train.ours_setup(config, batch_np, a.warmup + a.rounds)
    runs = []
    for name, context, options in variants(a.compare):
        state = init_state(su, spec, seed=0)
        with context(), jax.set_mesh(su.mesh), nn.logical_axis_rules(su.rules):
            step = (
                jit_train_step(su, spec, cfg).lower(state, batch).compile(compiler_options=options)
            )
        runs.append({"name": name, "step": step, "state": state, "wall": [], "cpu": [], "loss": []})
    for i in range(a.warmup + a.rounds):
        for run in runs if i % 2 else runs[::-1]:
            t, c = time.perf_counter(), time.process_time()
            run["state"], metrics = run["step"](run["state"], batch)
            loss = float(metrics["loss"])  # blocks until the step is done
            if i >= a.warmup:
                run["wall"].append(time.perf_counter() - t)
                run["cpu"].append(time.process_time() - c)
            run["loss"].append(loss)
    out = {}
    for run in runs:
        out[run["name"]] = {
            "wall_ms": statistics.median(run["wall"]) * 1e3,
            "min_wall_ms": min(run["wall"]) * 1e3,
            "cpu_ms": statistics.median(run["cpu"]) * 1e3,
            "losses": run["loss"],
        }
        r = out[run["name"]]
        print(
            f"{run['name']:<28} wall {r['wall_ms']:7.1f} ms (fastest {r['min_wall_ms']:.1f})"
            f"  CPU {r['cpu_ms']:7.1f} ms  loss after {len(r['losses'])} steps {r['losses'][-1]!r}"
        )
    (a_ms, b_ms) = (r["wall_ms"] for r in out.values())
    print(f"B / A: {b_ms / a_ms - 1:+.1%} wall")
    return out


if __name__ == "__main__":
    main()
