"""Op-level profile of the CPU bench's train step: ours (XLA ops) beside Hugging Face's (torch ops).

  python bench/step_profile.py                      # ours: time by op kind, model region, top ops
  python bench/step_profile.py --peer hf_eager      # also torch's profiler on the HF step
  taskset -c 1 python bench/step_profile.py --threads 1 --steps 5   # steadier on a shared box

Same model, shapes and optimizer as bench/train.py. Ours: a jax.profiler trace of --steps steps,
each XLA op's time joined with the optimized HLO (op kind, the model path in its metadata);
plus the step's process CPU time, steadier than wall time when other jobs share the cores.
Peer: torch.profiler's self CPU time per aten op.
"""

from __future__ import annotations

import argparse
import collections
import glob
import gzip
import json
import os
import re
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import train as bench_train  # noqa: E402  (bench/train.py: config, batch, peers)

_INSTR = re.compile(r"^\s+(?:ROOT )?%(\S+) = (\S+) ([\w-]+)\((.*)$", re.M)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--steps", type=int, default=3)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--threads", type=int, default=0, help="as bench/train.py (0 = defaults)")
    p.add_argument("--top", type=int, default=20, help="how many single ops to list")
    p.add_argument("--peer", default="", help="hf_eager | hf_compile: also profile that step")
    p.add_argument("--hlo", default=None, help="also write our optimized HLO text here")
    return p.parse_args(argv)


def hlo_ops(hlo: str) -> dict[str, tuple[str, str, str]]:
    """Instruction name -> (kind, shape, op_name metadata) for every instruction of the module."""
    bodies = {m.group(1): m.group(0) for m in re.finditer(r"^%(\S+) .*?^}", hlo, re.M | re.S)}
    out = {}
    for m in _INSTR.finditer(hlo):
        name, shape, op, rest = m.groups()
        meta = re.search(r'op_name="([^"]*)"', rest)
        calls = re.search(r"calls=%([\w.-]+)", rest)
        body = bodies.get(calls.group(1), "") if calls else ""
        out[name] = (_kind(op, body), shape, meta.group(1) if meta else "")
    return out


def _kind(op: str, body: str) -> str:
    """Coarse class of an op (a fusion by what its body holds): what kind of work it does."""
    has = lambda o: op == o or f" {o}(" in body  # noqa: E731
    if has("dot") or has("convolution"):
        return "matmul"
    for k in ("scatter", "gather", "reduce"):
        if has(k):
            return k
    if has("transpose") or has("copy"):
        return "transpose/copy"
    return "elementwise"


def region(op_name: str) -> str:
    """Where in the step an op comes from: model block, loss, optimizer; '/bwd' for gradients."""
    bwd = "/bwd" if "transpose(jvp(" in op_name else ""
    if "Transformer" not in op_name:
        return "loss/optimizer/other"
    m = re.search(r"(encoder|decoder)/layers_\d+/(\w+)", op_name)
    if m:
        return f"{m.group(1)}/{m.group(2)}{bwd}"
    m = re.search(r"(encoder|decoder)/(\w+)", op_name)
    return (f"{m.group(1)}/{m.group(2)}" if m else "model/other") + bwd


def trace_op_ms(trace_dir: str, names: set[str], steps: int) -> collections.Counter:
    """Per-step milliseconds of each HLO op in a jax.profiler trace (perfetto JSON)."""
    path = sorted(glob.glob(f"{trace_dir}/**/*.trace.json.gz", recursive=True))[-1]
    events = json.load(gzip.open(path))
    events = events["traceEvents"] if isinstance(events, dict) else events
    per: collections.Counter = collections.Counter()
    for e in events:
        if e.get("ph") == "X" and e.get("name") in names:
            per[e["name"]] += e["dur"] / 1e3 / steps
    return per


def _thread_ids() -> set[int]:
    return {int(t) for t in os.listdir("/proc/self/task")}


def _move_off_our_cores(tids: set[int]) -> None:
    """Pin the profiler's own threads to the cores the step may not use.

    One of them spins while a trace is on: on the step's core (under taskset) it took half the
    core and doubled every op's time. Where no other core exists they stay and say so.
    """
    ours = os.sched_getaffinity(0)
    spare = set(range(os.cpu_count() or 1)) - ours
    if not spare:
        print(f"note: no core outside {sorted(ours)} for the profiler's threads; op times inflate")
        return
    for tid in tids:
        try:
            os.sched_setaffinity(tid, spare)
        except OSError:  # the thread has exited
            pass


def profile_ours(a: argparse.Namespace) -> dict[str, Any]:
    import jax

    config = bench_train.build_config(bench_train.parse_args(["--peers", ""]), gpu=False)
    batch_np = bench_train.make_batch(8, 128, 32, config.vocab_size)
    step, state, batch = bench_train.build_ours(config, batch_np, a.warmup + a.steps)
    hlo = step.as_text()
    if a.hlo:
        Path(a.hlo).write_text(hlo)
    ops = hlo_ops(hlo)
    cpu, wall = [], []
    for i in range(a.warmup + a.steps):
        c, w = time.process_time(), time.perf_counter()
        state, metrics = step(state, batch)
        jax.block_until_ready(metrics["loss"])
        if i >= a.warmup:
            cpu.append(time.process_time() - c)
            wall.append(time.perf_counter() - w)
    with tempfile.TemporaryDirectory() as d:
        before = _thread_ids()
        jax.profiler.start_trace(d, create_perfetto_trace=True)
        _move_off_our_cores(_thread_ids() - before)
        for _ in range(a.steps):
            state, metrics = step(state, batch)
            jax.block_until_ready(metrics["loss"])
        jax.profiler.stop_trace()
        per = trace_op_ms(d, set(ops), a.steps)
    by_kind: collections.Counter = collections.Counter()
    by_region: collections.Counter = collections.Counter()
    for name, ms in per.items():
        kind, _, meta = ops[name]
        by_kind[kind] += ms
        by_region[region(meta)] += ms
    cost = step.cost_analysis()
    return {
        "cpu_ms": statistics.median(cpu) * 1e3,
        "wall_ms": statistics.median(wall) * 1e3,
        "op_ms": sum(per.values()),
        "by_kind": dict(by_kind.most_common()),
        "by_region": dict(by_region.most_common()),
        "top": [(n, ms, *ops[n]) for n, ms in per.most_common(a.top)],
        "flops": cost.get("flops"),
        "bytes": cost.get("bytes accessed"),
        "loss": float(metrics["loss"]),
    }


def profile_peer(a: argparse.Namespace) -> dict[str, Any]:
    import torch

    config = bench_train.build_config(bench_train.parse_args(["--peers", ""]), gpu=False)
    batch_np = bench_train.make_batch(8, 128, 32, config.vocab_size)
    one_step = bench_train.build_hf(config, batch_np, a.peer == "hf_compile", gpu=False)
    for _ in range(a.warmup + 1):
        one_step()
    cpu = []
    for _ in range(a.steps):
        c = time.process_time()
        one_step()
        cpu.append(time.process_time() - c)
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        for _ in range(a.steps):
            one_step()
    rows = sorted(prof.key_averages(), key=lambda r: r.self_cpu_time_total, reverse=True)
    total = sum(r.self_cpu_time_total for r in rows) / 1e3 / a.steps
    top = [(r.key, r.self_cpu_time_total / 1e3 / a.steps) for r in rows[: a.top]]
    return {"cpu_ms": statistics.median(cpu) * 1e3, "op_ms": total, "top": top}


def _share_table(title: str, rows: dict[str, float], total: float) -> None:
    print(title)
    for k, ms in rows.items():
        print(f"  {k:<44}{ms:9.1f} ms {ms / total:6.1%}")


def main(argv: list[str] | None = None) -> dict[str, Any]:
    a = parse_args(argv)
    bench_train.set_threads(a.threads)
    if a.threads > 0 and a.peer:
        import torch

        torch.set_num_threads(a.threads)
    ours = profile_ours(a)
    total = ours["op_ms"]
    print(
        f"ours: step {ours['wall_ms']:.1f} ms wall, {ours['cpu_ms']:.1f} ms CPU; ops {total:.1f} ms;"
        f" HLO {ours['flops'] / 1e9:.2f} GFLOP, {ours['bytes'] / 1e9:.3f} GB accessed;"
        f" loss {ours['loss']:.4f}"
    )
    _share_table("by op kind:", ours["by_kind"], total)
    _share_table("by model region:", ours["by_region"], total)
    print("top ops:")
    for name, ms, kind, shape, meta in ours["top"]:
        print(
            f"  {ms:8.1f} ms {ms / total:6.1%}  {kind:<15}{shape[:28]:<29}{name[:26]:<27}{meta[-60:]}"
        )
    out = {"ours": ours}
    if a.peer:
        peer = profile_peer(a)
        print(f"{a.peer}: step {peer['cpu_ms']:.1f} ms CPU; ops (self) {peer['op_ms']:.1f} ms")
        for key, ms in peer["top"]:
            print(f"  {ms:8.1f} ms {ms / peer['op_ms']:6.1%}  {key}")
        out[a.peer] = peer
    return out


if __name__ == "__main__":
    main()
