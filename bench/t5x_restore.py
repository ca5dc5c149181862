"""Restore time of a t5x checkpoint per GB on CPU, against orbax restoring the same params.

  python bench/t5x_restore.py                 # T5-small (77M params), fp32, with Adafactor state
  python bench/t5x_restore.py --preset base --repeats 5

Writes a legacy t5x checkpoint (msgpack + gzip zarr per array, t5x's layout: Flan-T5's public
checkpoints look like this) and a save_params orbax checkpoint of the same random params in a
temp dir, then times, alternating, `checkpoints.t5x.read` (params only; and params plus the
Adafactor state) and `params_io.restore_tree` (orbax, OCDBT). Reported: median seconds,
seconds per GB of array bytes read, and the t5x / orbax ratio measured in the same run. Files are
in the page cache after the first read, so this is decode + copy cost, not disk bandwidth.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--preset", default="small")
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()

    import jax
    import numpy as np

    from scicot_jax.checkpoints import t5x, t5x_adafactor
    from scicot_jax.checkpoints.params_io import restore_tree, save_params
    from scicot_jax.model import T5Config, init_params, logical_axes
    from scicot_jax.train.optimizers import OptimizerConfig, make_optimizer

    config = T5Config.preset(args.preset)
    params = jax.tree.map(np.asarray, init_params(config, jax.random.key(0)))
    opt, _ = make_optimizer(OptimizerConfig())
    opt_state = jax.tree.map(lambda x: np.asarray(x) + 0.5, opt.init(params))  # nonzero state
    states = t5x_adafactor.to_t5x(opt_state, params, logical_axes(config))
    work = Path(tempfile.mkdtemp(prefix="bench_t5x_"))
    t5x_dir = t5x.write_legacy(work / "checkpoint_1000", params, 1000, states)
    save_params(work / "orbax", params, config)

    def nbytes(tree) -> int:
        return sum(np.asarray(x).nbytes for x in jax.tree.leaves(tree))

    p_gb = nbytes(params) / 1e9
    s_gb = nbytes(states) / 1e9
    runs = {
        "t5x params": (lambda: t5x.read(t5x_dir, optimizer=False), p_gb),
        "t5x params+adafactor": (lambda: t5x.read(t5x_dir), p_gb + s_gb),
        "orbax params": (lambda: restore_tree(work / "orbax" / "params"), p_gb),
    }
    times: dict[str, list[float]] = {k: [] for k in runs}
    for _ in range(args.repeats):
        for name, (fn, _) in runs.items():
            t0 = time.perf_counter()
            jax.block_until_ready(jax.tree.leaves(fn() if "orbax" in name else fn().params))
            times[name].append(time.perf_counter() - t0)
    print(f"T5-{args.preset}: params {p_gb:.3f} GB, Adafactor state {s_gb:.3f} GB (fp32), CPU")
    for name, (_, gb) in runs.items():
        xs = times[name]
        med = statistics.median(xs)
        print(
            f"  {name:22s} median {med:6.2f} s (min {min(xs):.2f}, max {max(xs):.2f}) "
            f"= {med / gb:5.2f} s/GB"
        )
    ratio = statistics.median(times["t5x params"]) / statistics.median(times["orbax params"])
    print(f"  t5x / orbax (params): {ratio:.2f}")


if __name__ == "__main__":
    main()
