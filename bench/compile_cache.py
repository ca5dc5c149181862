"""Restart-to-first-step with and without the persistent compilation cache (COMPILATION_CACHE_DIR).

  python bench/compile_cache.py                   # T5-small shapes on CPU, 3 restarts each
  python bench/compile_cache.py --preset tiny --repeats 5

A preempted job restarts as a new process: it resumes the model dir's latest checkpoint and has
to compile the train step again unless the XLA cache holds it. Each restart here is a fresh
Python process that resumes a model dir at step 1 and trains to step 2; it reports the wall time
from process start to the first step finished (imports, restore, compile, one step) and the
compile time the trainer logs (tracing + lowering + XLA compile, or the cache load), and whether
JAX reported a persistent-cache hit for the train step. "cold": no cache dir; "warm": a cache
dir filled by a previous run. Both arms alternate, so machine load hits them alike; medians and min-max are printed.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def child(model_dir: str, cache_dir: str, preset: str, steps: int, t_start: float) -> None:
    """One restart: resume `model_dir` and train to `steps`; prints timings as JSON."""
    import logging

    sys.path.insert(0, str(ROOT))
    sys.path.insert(0, str(ROOT / "tests"))
    import jax
    import numpy as np

    if cache_dir:
        from jax.experimental.compilation_cache import compilation_cache

        jax.config.update("jax_compilation_cache_dir", cache_dir)
        compilation_cache.reset_cache()
    from scicot_jax.model import T5Config
    from scicot_jax.train.configs import CheckpointConfig
    from scicot_jax.train.trainer import TrainConfig, train

    compile_s = []

    class Grab(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            if record.getMessage().startswith("train step compiled in"):
                compile_s.append(float(record.args[0]))

    hits = []

    class Hit(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            if "cache hit for 'jit_train_step'" in record.getMessage():
                hits.append(1)

    logging.getLogger("scicot_jax.train.trainer").addHandler(Grab())
    logging.getLogger("scicot_jax.train.trainer").setLevel(logging.INFO)
    logging.getLogger("jax._src.compiler").addHandler(Hit())
    logging.getLogger("jax._src.compiler").setLevel(logging.DEBUG)
    config = T5Config.preset(preset, vocab_size=32128 if preset != "tiny" else 512)
    lengths = {"inputs": 64, "targets": 16}
    rng = np.random.default_rng(0)

    def batches(start):
        while True:
            enc = rng.integers(2, config.vocab_size, (2, lengths["inputs"]), dtype=np.int32)
            dec = rng.integers(2, config.vocab_size, (2, lengths["targets"]), dtype=np.int32)
            yield {
                "encoder_input_tokens": enc,
                "decoder_target_tokens": dec,
                "decoder_input_tokens": np.concatenate([np.zeros_like(dec[:, :1]), dec[:, :-1]], 1),
                "decoder_loss_weights": np.ones_like(dec, np.float32),
            }

    cfg = TrainConfig(
        model_dir=model_dir,
        train_steps=steps,
        model=config,
        feature_lengths=lengths,
        checkpoint=CheckpointConfig(period=1, async_save=False),
        log_period=1,
        handle_sigterm=False,
    )
    train(cfg, batches)
    out = {"first_step_s": time.time() - t_start, "compile_s": compile_s[0], "hit": bool(hits)}
    print(json.dumps(out))


def restart(model_dir: str, cache_dir: str, preset: str, steps: int) -> dict:
    t0 = time.time()
    code = (
        f"import sys; sys.path.insert(0, {str(ROOT / 'bench')!r}); import compile_cache; "
        f"compile_cache.child({model_dir!r}, {cache_dir!r}, {preset!r}, {steps}, {t0})"
    )
    env = dict(os.environ, JAX_PLATFORMS="cpu")
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, check=False
    )
    if out.returncode:
        raise RuntimeError(out.stderr[-3000:])
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--preset", default="small")
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bench_cc_"))
    cache = str(work / "xla_cache")
    # Step 1 on disk (what a preempted job left) and the cache filled once.
    restart(str(work / "model"), cache, args.preset, 1)
    res: dict[str, list[dict]] = {"cold": [], "warm": []}
    for i in range(args.repeats):
        for arm in ("cold", "warm"):
            model_dir = work / f"{arm}{i}"
            subprocess.run(["cp", "-r", str(work / "model"), str(model_dir)], check=True)
            res[arm].append(restart(str(model_dir), cache if arm == "warm" else "", args.preset, 2))
    print(f"T5-{args.preset} on CPU, restart (resume step 1 -> step 2), {args.repeats} each:")
    for key in ("first_step_s", "compile_s"):
        for arm in ("cold", "warm"):
            xs = [r[key] for r in res[arm]]
            print(
                f"  {key:13s} {arm}: median {statistics.median(xs):6.2f} s "
                f"(min {min(xs):.2f}, max {max(xs):.2f})"
            )
    hits = {arm: sum(r["hit"] for r in res[arm]) for arm in res}
    print(f"  train-step persistent-cache hits: cold {hits['cold']}, warm {hits['warm']}")
    cold = statistics.median(r["first_step_s"] for r in res["cold"])
    warm = statistics.median(r["first_step_s"] for r in res["warm"])
    print(f"  restart-to-first-step: cache / no cache = {warm / cold:.2f}")


if __name__ == "__main__":
    main()
