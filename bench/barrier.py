"""Cost of the per-batch process barrier in `runtime.inference` on a pod (loopback, gloo, CPU).

  python bench/barrier.py                      # 2 processes x 2 fake CPU devices vs 1 x 4
  python bench/barrier.py --processes 4 --devices 1 --examples 256

`run_pipelined` calls `partitioning.sync_processes` (an orbax / coordination-service barrier)
before the first batch of each padded shape (it was once per batch), so that hosts start
compiling a shape together and gloo's collectives do not wait on a late peer past their timeout. Each process greedily decodes its shard of
`--examples` random inputs (tiny T5, global batch `--batch`) with `inference.predict`, timed
over `--repeats` runs after a warm-up, alternately with the barrier (as shipped) and with it
replaced by a no-op; then `--barriers` bare barriers are timed. The same decode in one process
with all the devices is the peer. Prints ms per batch of each and the ratios.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def worker(args: argparse.Namespace) -> None:
    import jax
    import numpy as np

    from scicot_jax.model import T5Config, init_params
    from scicot_jax.model.decoding import DecodeConfig
    from scicot_jax.runtime import inference, multihost
    from scicot_jax.runtime import partitioning as part

    if args.processes > 1:
        part.initialize_distributed(f"127.0.0.1:{args.port}", args.processes, args.index)
    config = T5Config.preset(
        "tiny", vocab_size=512, d_model=32, num_heads=2, d_kv=16, d_ff=64, dtype="float32"
    )
    mesh = part.make_mesh()
    params = init_params(config, jax.random.key(0))
    rng = np.random.default_rng(0)
    rows = [list(rng.integers(2, 512, int(n))) + [1] for n in rng.integers(8, 60, args.examples)]
    host, hosts = part.host_shard(mesh)
    mine = rows[host::hosts]

    shipped = part.sync_processes

    def decode() -> float:
        shipped("bench start")
        t0 = time.perf_counter()
        inference.predict(
            params,
            config,
            mesh,
            mine,
            decode=DecodeConfig(max_decode_length=16),
            input_length=64,
            batch_size=args.batch,
        )
        return time.perf_counter() - t0

    batches = -(-args.examples // args.batch)
    calls = []
    inference.part.sync_processes = lambda what: (calls.append(what), shipped(what))
    decode()  # compiles every bucket shape; counts the barriers of one decode
    inference.part.sync_processes = shipped
    times: dict[str, list[float]] = {"barrier": [], "no barrier": []}
    for _ in range(args.repeats):
        for name in times:
            inference.part.sync_processes = shipped if name == "barrier" else (lambda what: None)
            times[name].append(decode() / batches)
            inference.part.sync_processes = shipped
    t0 = time.perf_counter()
    for _ in range(args.barriers):
        part.sync_processes("bench barrier")
    bare = (time.perf_counter() - t0) / args.barriers
    med = {k: statistics.median(v) * 1e3 for k, v in times.items()}
    spread = {k: (max(v) - min(v)) * 1e3 for k, v in times.items()}
    summary = {
        "processes": args.processes,
        "devices_per_process": args.devices,
        "batches": batches,
        "ms_per_batch": med,
        "spread_ms_per_batch": spread,
        "bare_barrier_ms": bare * 1e3,
        "barriers_per_decode": len(calls),
        "barrier_share_of_batch": (med["barrier"] - med["no barrier"]) / med["barrier"],
    }
    multihost.allgather_objects(0)  # every process done timing before one prints
    if jax.process_index() == 0:
        print(json.dumps(summary), flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--processes", type=int, default=2)
    ap.add_argument("--devices", type=int, default=2)
    ap.add_argument("--examples", type=int, default=128)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--barriers", type=int, default=200)
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--index", type=int, default=0, help=argparse.SUPPRESS)
    ap.add_argument("--port", type=int, default=0, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        worker(args)
        return
    pod = launch(args, args.processes, args.devices)
    one = launch(args, 1, args.processes * args.devices)
    print(json.dumps({"pod": pod, "one process": one}, indent=1))
    ms, peer = pod["ms_per_batch"], one["ms_per_batch"]["no barrier"]
    print(
        f"{pod['processes']} processes x {pod['devices_per_process']} devices, "
        f"{pod['batches']} batches of {args.batch}: {ms['barrier']:.2f} ms/batch with the "
        f"barrier, {ms['no barrier']:.2f} without (ratio {ms['barrier'] / ms['no barrier']:.3f}); "
        f"one process x {one['devices_per_process']} devices {peer:.2f} ms/batch "
        f"(pod with barrier / one process {ms['barrier'] / peer:.2f}); "
        f"a bare barrier {pod['bare_barrier_ms']:.3f} ms, {pod['barriers_per_decode']} per decode"
    )


def launch(args: argparse.Namespace, processes: int, devices: int) -> dict:
    """Runs the workers of one pod shape; process 0's summary."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = dict(
        os.environ,
        JAX_PLATFORMS="cpu",
        XLA_FLAGS=f"--xla_force_host_platform_device_count={devices}",
        PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
    )
    flags = [f"--{k}={v}" for k, v in vars(args).items() if k not in ("worker", "index", "port")]
    flags += [f"--processes={processes}", f"--devices={devices}", f"--port={port}", "--worker"]
    procs = [
        subprocess.Popen(
            [sys.executable, __file__, *flags, f"--index={i}"],
            env=env,
            stdout=subprocess.PIPE if i == 0 else subprocess.DEVNULL,
            text=True,
        )
        for i in range(processes)
    ]
    out = procs[0].communicate()[0]
    rcs = [p.wait() for p in procs]
    if any(rcs):
        sys.exit(f"bench/barrier.py: workers exited {rcs}")
    return json.loads(out.strip().splitlines()[-1])


if __name__ == "__main__":
    main()
