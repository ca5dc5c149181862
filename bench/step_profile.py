"""Op-level profile of the CPU bench's train step: ours (XLA ops) beside Hugging Face's (torch ops).

  python bench/step_profile.py                      # ours: time by op kind, model region, top ops
  python bench/step_profile.py --peer hf_eager      # also torch's profiler on the HF step
  taskset -c 1 python bench/step_profile.py --threads 1 --steps 5   # steadier on a shared box

Same model, shapes and optimizer as bench/train.py. Ours: a jax.profiler trace of --steps steps,
each XLA op's time joined with the optimized HLO (op kind, the model path in its metadata);
plus the step's process CPU time, steadier than wall time when other jobs share the cores.
Peer: torch.profiler's self CPU time per aten op. Both: minor page faults a step, and the
matmul time by problem size side by side. The trace's own threads are pinned off the step's
cores (one spins while tracing); under taskset that keeps the op times those of the step.
"""

from __future__ import annotations

import argparse
import collections
import glob
import gzip
import json
import math
import os
import re
import resource
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator
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


def instructions(hlo: str) -> Iterator[tuple[str, str, str, str, str]]:
    """(name, shape, opcode, line, body of the computation it calls or "") of each instruction."""
    bodies = {m.group(1): m.group(0) for m in re.finditer(r"^%(\S+) .*?^}", hlo, re.M | re.S)}
    for m in _INSTR.finditer(hlo):
        name, shape, op, rest = m.groups()
        calls = re.search(r"calls=%([\w.-]+)", rest)
        yield name, shape, op, m.group(0), bodies.get(calls.group(1), "") if calls else ""


def hlo_ops(hlo: str) -> dict[str, tuple[str, str, str]]:
    """Instruction name -> (kind, shape, op_name metadata) for every instruction of the module."""
    out = {}
    for name, shape, op, line, body in instructions(hlo):
        meta = re.search(r'op_name="([^"]*)"', line)
        out[name] = (_kind(op, body), shape, meta.group(1) if meta else "")
    return out


def matmul_problems(hlo: str) -> dict[str, tuple[int, int, int, int]]:
    """Instruction name -> (batch, M, K, N) of the dot it is or its fusion holds."""
    shapes = {m.group(1): m.group(2) for m in _INSTR.finditer(hlo)}
    out = {}
    for name, _, op, line, body in instructions(hlo):
        dot = _DOT.search(line if op == "dot" else body)
        if dot:
            out[name] = _problem(shapes, *dot.groups())
    return out


_DOT = re.compile(r"= (\S+) dot\(%([\w.-]+), %([\w.-]+)\)(.*)$", re.M)


def _problem(shapes: dict[str, str], out: str, lhs: str, _rhs: str, attrs: str) -> tuple:
    """(batch, M, K, N) of one dot from its output and left operand's shapes."""
    left = _dims(shapes[lhs])
    contract, batch = (_ints(_attr(attrs, f"lhs_{k}_dims")) for k in ("contracting", "batch"))
    b = math.prod(left[i] for i in batch)
    k = math.prod(left[i] for i in contract)
    m = math.prod(d for i, d in enumerate(left) if i not in contract and i not in batch)
    return b, m, k, math.prod(_dims(out)) // (b * m)


def _attr(attrs: str, key: str) -> str:
    found = re.search(key + r"=\{([\d,]*)\}", attrs)
    return found[1] if found else ""


def _ints(csv: str) -> list[int]:
    return [int(d) for d in csv.split(",") if d]


def _dims(shape: str) -> list[int]:
    """[8, 4, 128] from 'f32[8,4,128]{2,1,0}'."""
    return _ints(re.match(r"\w+\[([\d,]*)\]", shape)[1])


def problem_key(b: int, m: int, k: int, n: int) -> str:
    """A matmul's size whatever its orientation: batch x the three dims, sorted."""
    return f"{b} x " + "x".join(map(str, sorted((m, k, n))))


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
    cpu, wall, faults = [], [], []
    for i in range(a.warmup + a.steps):
        c, w, f = time.process_time(), time.perf_counter(), _minor_faults()
        state, metrics = step(state, batch)
        jax.block_until_ready(metrics["loss"])
        if i >= a.warmup:
            cpu.append(time.process_time() - c)
            wall.append(time.perf_counter() - w)
            faults.append(_minor_faults() - f)
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
    by_matmul: collections.Counter = collections.Counter()
    problems = matmul_problems(hlo)
    for name, ms in per.items():
        kind, _, meta = ops[name]
        by_kind[kind] += ms
        by_region[region(meta)] += ms
        if name in problems:
            by_matmul[problem_key(*problems[name])] += ms
    cost = step.cost_analysis()
    return {
        "cpu_ms": statistics.median(cpu) * 1e3,
        "wall_ms": statistics.median(wall) * 1e3,
        "op_ms": sum(per.values()),
        "by_kind": dict(by_kind.most_common()),
        "by_region": dict(by_region.most_common()),
        "by_matmul": dict(by_matmul.most_common()),
        "faults": statistics.median(faults),
        "temp_bytes": step.memory_analysis().temp_size_in_bytes,
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
    cpu, faults = [], []
    for _ in range(a.steps):
        c, f = time.process_time(), _minor_faults()
        one_step()
        cpu.append(time.process_time() - c)
        faults.append(_minor_faults() - f)
    activities = [torch.profiler.ProfilerActivity.CPU]
    with torch.profiler.profile(activities=activities, record_shapes=True) as prof:
        for _ in range(a.steps):
            one_step()
    rows = sorted(prof.key_averages(), key=lambda r: r.self_cpu_time_total, reverse=True)
    total = sum(r.self_cpu_time_total for r in rows) / 1e3 / a.steps
    top = [(r.key, r.self_cpu_time_total / 1e3 / a.steps) for r in rows[: a.top]]
    by_matmul: collections.Counter = collections.Counter()
    for r in prof.key_averages(group_by_input_shape=True):
        if r.key in TORCH_MATMULS:
            problem = TORCH_MATMULS[r.key](*r.input_shapes)
            by_matmul[problem_key(*problem)] += r.self_cpu_time_total / 1e3 / a.steps
    return {
        "cpu_ms": statistics.median(cpu) * 1e3,
        "op_ms": total,
        "top": top,
        "by_matmul": dict(by_matmul.most_common()),
        "faults": statistics.median(faults),
    }


# torch's matmul ops -> (batch, M, K, N) from their input shapes.
TORCH_MATMULS = {
    "aten::mm": lambda a, b, *_: (1, a[0], a[1], b[1]),
    "aten::addmm": lambda _bias, a, b, *_: (1, a[0], a[1], b[1]),
    "aten::bmm": lambda a, b, *_: (a[0], a[1], a[2], b[2]),
}


def _minor_faults() -> int:
    """This process's minor page faults so far (a first touch of freshly mapped memory)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt


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
        f" loss {ours['loss']:.4f}; {ours['faults']:.0f} minor page faults a step"
        f" (temporaries {ours['temp_bytes'] / 1e6:.1f} MB)"
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
        print(
            f"{a.peer}: step {peer['cpu_ms']:.1f} ms CPU; ops (self) {peer['op_ms']:.1f} ms;"
            f" {peer['faults']:.0f} minor page faults a step"
        )
        for key, ms in peer["top"]:
            print(f"  {ms:8.1f} ms {ms / peer['op_ms']:6.1%}  {key}")
        out[a.peer] = peer
    _matmul_table(ours, out.get(a.peer), a.peer)
    return out


def _matmul_table(ours: dict[str, Any], peer: dict[str, Any] | None, name: str) -> None:
    """Matmul time by problem size (batch x sorted dims), ours beside the peer's."""
    theirs = peer["by_matmul"] if peer else {}
    print(f"matmuls by problem (batch x dims):{'ours':>14}{name:>14}")
    for key in sorted(
        set(ours["by_matmul"]) | set(theirs), key=lambda k: -ours["by_matmul"].get(k, 0)
    ):
        print(
            f"  {key:<32}{ours['by_matmul'].get(key, 0.0):11.1f} ms{theirs.get(key, 0.0):11.1f} ms"
        )
    mine, other = sum(ours["by_matmul"].values()), sum(theirs.values())
    print(f"  {'all':<32}{mine:11.1f} ms{other:11.1f} ms")
    rest = f"; the rest {peer['cpu_ms'] - other:.1f} ms" if peer else ""
    print(f"  step CPU less matmuls: ours {ours['cpu_ms'] - mine:.1f} ms{rest}")


if __name__ == "__main__":
    main()
