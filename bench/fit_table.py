"""Which Flan-T5 size fits which TPU slice: the TPU compiler's answer, from a CPU host (libtpu).

  python bench/fit_table.py                       # every cell, writes docs/fit_table.md
  python bench/fit_table.py --sizes xl --slices v5e-16 --render-only

For each (size, slice) it compiles the real train step (make_setup / jit_train_step: Adafactor,
bf16 activations, fp32 weights, dropout 0.1, packed inputs 512 / targets 128) for the slice's
topology and walks the candidates cheapest first: per-chip batch high to low, then (model
parallelism, parameter_partitioning_dims, remat) in CANDIDATES' order; the first that fits the
chip's HBM is the cell's choice. A candidate whose weights and optimizer state alone exceed 90 %
of HBM (exact, from the shardings) is skipped without compiling. Every compile is appended to
bench/fit_table.jsonl, so a rerun only compiles what is missing (--fresh recompiles; --stale
recompiles records whose collectives were counted before async collectives were counted once).
With FIT_TABLE_HLO_DIR set, each compile's HLO is kept there (gzip) and --recount counts the
logged records' collectives again from it without compiling.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

SIZES = ("small", "base", "large", "xl", "xxl")
# Cloud TPU names -> names topologies.get_topology_desc takes (v5e-N: N chips; v4-N, v5p-N: N
# TensorCores, 2 per chip).
SLICES = {
    "v5e-8": "v5e:2x4",
    "v5e-16": "v5e:4x4",
    "v5e-64": "v5e:8x8",
    "v5e-256": "v5e:16x16",
    "v4-32": "v4:2x2x4",
    "v5p-8": "v5p:2x2x1",
}
TABLE_SLICES = ("v5e-8", "v5e-64", "v5e-256", "v4-32", "v5p-8")
EXTRA_CELLS = (("xl", "v5e-16"),)  # the check: XL on v5e-16, <= 2-way model parallel
# Per-chip batch (global batch / chips), tried high to low.
PER_CHIP = {"small": (16, 8), "base": (16, 8), "large": (8, 4), "xl": (4, 2, 1), "xxl": (1,)}
# (model parallel, parameter_partitioning_dims, remat), cheapest first: sharding weights over
# data costs all-gathers that overlap compute; remat costs recompute ("dots" keeps the
# projections and recomputes the rest of the layer, "full" one more forward of every layer);
# model parallelism costs activation collectives on every layer.
CANDIDATES = (
    (1, 1, "none"),
    (1, 2, "none"),
    (1, 2, "dots"),
    (1, 2, "full"),
    (2, 2, "none"),
    (2, 2, "full"),
    (4, 2, "none"),
    (4, 2, "full"),
    (8, 2, "full"),
)
# Shown beside the choice so the cheaper layout is visible: weights replicated over data,
# only model parallelism (the measured XL / XXL layouts).
COMPARE = {
    ("xl", "v5e-16"): [(4, 8, 1, "none")],  # per-chip batch, mp, ppd, remat
    ("xxl", "v5e-64"): [(1, 16, 1, "none")],
}
INPUTS, TARGETS = 512, 128
# Records' loop and collective counts: 3 reads loop steps of 2 (2 assumed steps of 1; 1 also
# counted libtpu's async collectives 3x).
COUNT_VERSION = 3
# Records' step: 2 draws random bits (dropout, sampling) per shard (platforms.SHARDED_RNG_FLAG);
# before, every chip drew the global batch's bits, so older records' temporaries grow with the
# slice.
STEP_VERSION = 2
LOG = ROOT / "bench" / "fit_table.jsonl"
OUT = ROOT / "docs" / "fit_table.md"


@dataclasses.dataclass(frozen=True)
class Cand:
    size: str
    slice: str
    per_chip: int
    mp: int
    ppd: int
    remat: str
    scan: bool = True

    def key(self) -> str:
        return json.dumps(dataclasses.asdict(self), sort_keys=True)


def compile_one(c: Cand) -> dict:
    """compile_in_process in a child: a compiler crash becomes a record, not the bench's end."""
    import subprocess

    r = subprocess.run(
        [sys.executable, __file__, "--one", c.key()], capture_output=True, text=True, cwd=ROOT
    )
    out = [s for s in r.stdout.splitlines() if s.startswith("RECORD ")]
    if r.returncode == 0 and out:
        print("\n".join(s for s in r.stdout.splitlines() if not s.startswith("RECORD ")))
        return json.loads(out[-1][len("RECORD ") :])
    tail = [s for s in r.stderr.splitlines() if "SIGSEGV" in s or "PC: @" in s]
    why = (tail or r.stderr.splitlines()[-1:] or ["?"])[0][:300]
    print(f"{c}: compiler process died (exit {r.returncode}): {why}", flush=True)
    return {"cand": dataclasses.asdict(c), "crashed": f"exit {r.returncode}: {why}"}


def compile_in_process(c: Cand) -> dict:
    """Compiles one candidate (or skips it when its state alone cannot fit); a log record."""
    import jax

    from scicot_jax.model.config import T5Config
    from scicot_jax.runtime import aot
    from scicot_jax.train.compile_only import train_report
    from scicot_jax.train.configs import PartitioningConfig
    from scicot_jax.train.optimizers import OptimizerConfig
    from scicot_jax.train.trainer import TrainConfig

    topo = SLICES[c.slice]
    chips = len(aot.topology_devices(topo))
    model = T5Config.preset(c.size, dropout_rate=0.1, scan_layers=c.scan, remat_policy=c.remat)
    config = TrainConfig(
        model_dir="/nonexistent",
        train_steps=1000,
        model=model,
        feature_lengths={"inputs": INPUTS, "targets": TARGETS},
        optimizer=OptimizerConfig(name="adafactor", learning_rate=1e-3, schedule="constant"),
        partitioning=PartitioningConfig(model_parallel=c.mp, parameter_partitioning_dims=c.ppd),
    )
    state_bytes = _state_bytes(config, topo)
    devices = aot.topology_devices(topo)
    hbm = aot.chip_hbm_bytes(devices[0], devices)
    rec: dict[str, Any] = {"cand": dataclasses.asdict(c), "chips": chips, "topology": topo}
    rec.update(state_bytes=state_bytes, step_version=STEP_VERSION)
    if hbm and state_bytes > 0.9 * hbm:
        rec.update(skipped=f"weights + optimizer state {aot.size(state_bytes)} per chip")
        return rec
    t0 = time.time()
    report = train_report(config, topo, c.per_chip * chips)
    rec.update(report.to_dict(), wall_s=round(time.time() - t0, 1), count_version=COUNT_VERSION)
    rec.update(step_version=STEP_VERSION, libtpu_init_args=os.environ.get("LIBTPU_INIT_ARGS"))
    _keep_hlo(c.key(), report.hlo_text)
    print(report.format(), flush=True)
    jax.clear_caches()
    return rec


def _keep_hlo(key: str, text: str | None) -> None:
    """$FIT_TABLE_HLO_DIR/<candidate>.hlo.gz: the compiled HLO, to re-read without compiling."""
    import gzip

    where = os.environ.get("FIT_TABLE_HLO_DIR")
    if where and text:
        Path(where).mkdir(parents=True, exist_ok=True)
        with gzip.open(Path(where) / _hlo_name(key), "wt") as f:
            f.write(text)


def recount(log: dict) -> None:
    """Collectives of logged compiles counted again from their kept HLO (FIT_TABLE_HLO_DIR)."""
    import gzip

    from scicot_jax.runtime import aot, hlo_loops

    for key, rec in list(log.items()):
        path = Path(os.environ.get("FIT_TABLE_HLO_DIR", "/nonexistent")) / _hlo_name(key)
        if rec.get("count_version") == COUNT_VERSION or not path.exists():
            continue
        with gzip.open(path, "rt") as f:
            text = f.read()
        bound = 128 if "decode" in rec["cand"] else None
        coll = aot.hlo_collectives(text, bound)
        # XLA's cost analysis of the compiled HLO is the compiler's own count (the same numbers).
        cost, loops = hlo_loops.per_step_cost(text, hlo_loops.hlo_cost(text), bound)
        rec.update(collectives=coll, count_version=COUNT_VERSION, compiler_flops=cost["flops"])
        rec.update(bytes_accessed=cost["bytes accessed"], loop_trips=[lp.trip for lp in loops])
        rec["collective_bytes"] = sum(c["bytes"] for c in coll.values())
        with LOG.open("a") as f:
            f.write(json.dumps(rec) + "\n")
        print(f"recounted {path.name}: {aot.size(rec['collective_bytes'])}")


def _hlo_name(key: str) -> str:
    import re

    return re.sub(r"[^\w]+", "_", key).strip("_") + ".hlo.gz"


def _state_bytes(config: Any, topo: str) -> int:
    """Bytes per chip of params + optimizer state under the candidate's shardings."""
    import jax

    from scicot_jax.runtime import aot
    from scicot_jax.runtime import partitioning as part
    from scicot_jax.train.state import t5_spec
    from scicot_jax.train.trainer import make_setup

    mesh = part.make_mesh(config.partitioning.model_parallel, devices=aot.topology_devices(topo))
    su = make_setup(config, t5_spec(config.model, config.feature_lengths), mesh)
    total = 0
    for a, s in zip(
        jax.tree.leaves((su.abstract_params, su.abstract_opt_state)),
        jax.tree.leaves((su.param_shardings, su.opt_shardings)),
    ):
        shard = s.shard_shape(a.shape)
        total += math.prod(shard) * a.dtype.itemsize
    return total


def search(
    size: str, slc: str, log: dict, fresh: bool, limit: int, stale: bool = False
) -> list[dict]:
    """Candidates of one cell, cheapest first, until one fits (or `limit` compiles); `stale`
    recompiles logged compiles whose collectives were counted the old way."""
    tried, compiles = [], 0
    for b in PER_CHIP[size]:
        for mp, ppd, remat in CANDIDATES:
            c = Cand(size, slc, b, mp, ppd, remat)
            rec = None if fresh else log.get(c.key())
            old = rec and rec.get("compiler_flops") and rec.get("count_version") != COUNT_VERSION
            rec = None if stale and old else rec
            if rec is None:
                if compiles >= limit:
                    return tried
                rec = compile_one(c)
                compiles += "skipped" not in rec
                log[c.key()] = rec
                with LOG.open("a") as f:
                    f.write(json.dumps(rec) + "\n")
            tried.append(rec)
            if rec.get("fits"):
                return tried
    return tried


def compare(size: str, slc: str, log: dict, fresh: bool) -> list[dict]:
    out = []
    for b, mp, ppd, remat in COMPARE.get((size, slc), []):
        c = Cand(size, slc, b, mp, ppd, remat)
        rec = None if fresh else log.get(c.key())
        if rec is None:
            rec = compile_one(c)
            log[c.key()] = rec
            with LOG.open("a") as f:
                f.write(json.dumps(rec) + "\n")
        out.append(rec)
    return out


def _gib(n: float) -> str:
    return f"{n / 2**30:.2f}"


def row(rec: dict) -> str:
    from scicot_jax.runtime import aot

    if "crashed" in rec:
        c = rec["cand"]
        return (
            f"| {c['size']} | {c['slice']} | mp {c['mp']} | {c['ppd']} | {c['remat']} | "
            f"{c['per_chip']} | TPU compiler crashed ({rec['crashed'].split(':')[0]}"
            f"{', SIGSEGV' if rec['crashed'].startswith('exit -11') else ''}) | - | - | - | ? |"
        )
    c = rec["cand"]
    mesh = f"{rec['chips'] // c['mp']} x {c['mp']}"
    head = (
        f"| {c['size']} | {c['slice']} (`{rec['topology']}`) | {mesh} | {c['ppd']} | "
        f"{c['remat']} | {c['per_chip']} ({c['per_chip'] * rec['chips']}) |"
    )
    if "skipped" in rec:
        return head + f" {rec['skipped']}, not compiled | - | - | - | **no** |"
    if rec.get("error"):
        err = aot.oom_message(RuntimeError(rec["error"])) or rec["error"]
        return head + f" {err} | - | - | - | **no** |"
    coll = "; ".join(
        f"{k} {v['count']}x {v['bytes'] / 2**20:.0f} MiB"
        for k, v in sorted(rec["collectives"].items())
    )
    coll_bytes = f"{rec['collective_bytes'] / 2**30:.2f} GiB"
    if rec.get("count_version") != COUNT_VERSION:
        coll_bytes = "?"
        coll = "not per step: counted before loop steps and async collectives were; recompile"
    ratio = (
        f" ({rec['compiler_flops'] / rec['model_flops']:.2f}x model)"
        if rec.get("model_flops") and rec.get("compiler_flops")
        else ""
    )
    return (
        head + f" {_gib(rec['argument_bytes'])} + {_gib(rec['temp_bytes'])} = "
        f"**{_gib(rec['peak_bytes'])}** of {_gib(rec['hbm_bytes'])} | "
        f"{rec['compiler_flops']:.3g}{ratio} | {coll_bytes} | "
        f"{coll} | {'yes' if rec['fits'] else '**no**'} |"
    )


HEADER = (
    "| model | slice | mesh (data x model) | param. partitioning dims | remat | batch per chip "
    "(global) | memory per chip, GiB (args + temps = peak of HBM) | compiler FLOPs per chip per "
    "step | collective bytes per chip per step | collectives (kind, count, bytes) | fits |\n"
    "|---|---|---|---|---|---|---|---|---|---|---|"
)


def render(
    cells: list[tuple[str, str, list[dict], list[dict]]], decode: list[dict], missing: list[str]
) -> str:
    lines = [
        "# Fit table: Flan-T5 train steps on Cloud TPU slices",
        "",
        "Remade by `python bench/fit_table.py` (about an hour on 2 CPU cores; each compile is "
        "logged in `bench/fit_table.jsonl` and reused). Every figure is the TPU compiler's own "
        "(libtpu, `jax.experimental.topologies`, no TPU needed): `memory_analysis()` per chip, "
        "`cost_analysis()['flops']` per chip, and the collectives of the compiled HLO (result "
        "bytes per chip). The compiler's cost analysis counts a while loop's body once, and "
        "libtpu's HLO gives the scanned layers' loop no trip count: the FLOPs, HBM bytes and "
        "collectives here count each loop body once per iteration, the trip count read from "
        "the loop's condition (`scicot_jax/runtime/hlo_loops.py`). Model FLOPs come from "
        "`scicot_jax/model/flops.py` (6 x params x tokens style count; remat shows up as the "
        "ratio above 1). The same report for any gin config: "
        "`python -m scicot_jax.train --gin_file=... --compile_only=v5e:4x4`.",
        "",
        f"Step: Adafactor, fp32 weights, bf16 activations, dropout 0.1, packed rows of {INPUTS} "
        f"input / {TARGETS} target tokens, scanned layers. Candidates per cell, cheapest first: "
        "batch per chip high to low, then (model parallel, parameter partitioning dims, remat) "
        f"in the order {', '.join(f'({m}, {p}, {r})' for m, p, r in CANDIDATES)}; the first "
        "that fits is the choice. Parameter partitioning dims 2 is t5x's "
        "`parameter_partitioning_dims=2` (weights and optimizer state sharded over `data` too).",
        "",
        "Remat compiles with libtpu 0.0.42 only with a larger stack for the compiler's "
        "threads, which `import scicot_jax` sets (`LIBTPU_INIT_ARGS="
        "--xla_internal_thread_stack_size_bytes`, scicot_jax/platforms.py); with the default "
        "stack the TPU compiler crashes on any remat step (SIGSEGV, stack overflow in "
        "`FusedSpatialMajorConvolution::MakeConvWindows`). It also sets "
        "`--xla_tpu_spmd_rng_bit_generator_unsafe=true`: without it every chip draws the "
        "dropout bits of the whole global batch and slices its rows out, so the temporaries "
        "grow with the slice at a fixed batch per chip (T5-small, 16 rows per chip: 6.44 GiB "
        "of temporaries on v5e-8, 12.93 on v5e-64, 27.77 on v5e-256; with it 6.46 on all "
        "three). Memory is per device: libtpu's v4 topologies list each TensorCore as a device, "
        "with half of the chip's 32 GiB.",
        "",
        "## Cheapest layout that fits (else the last one tried, marked no)",
        "",
        HEADER,
    ]
    for _, _, tried, _ in cells:
        fit = [r for r in tried if r.get("fits")]
        lines.append(row(fit[0]) if fit else row(tried[-1]) if tried else "")
    if missing:
        lines += [
            "",
            f"Not compiled yet (no fitting layout in the log): {', '.join(missing)}. "
            "`python bench/fit_table.py` compiles them.",
        ]
    lines += ["", "## Every compile in the log (the comparison layouts included)", "", HEADER]
    for size, slc, _, _ in cells:
        lines += [
            row(r)
            for r in _load_all().values()
            if r["cand"].get("size") == size and r["cand"].get("slice") == slc
        ]
    if decode:
        lines += [
            "",
            "## Sampling step (Fine-tune-CoT diverse reasoning, Stage-1 rationales)",
            "",
            "Encoder, prefill and the decode loop compiled as one program; bf16 weights. The "
            "loop stops at EOS, so its HLO has no trip count: FLOPs and collectives count it at "
            "its bound (every new token), as the model's FLOPs do: an upper limit.",
            "",
            "| model | slice | mesh | batch | inputs | new tokens | memory per chip, GiB | "
            "compiler FLOPs (model's) | collectives per program, all new tokens | fits |",
            "|---|---|---|---|---|---|---|---|---|---|",
        ]
        for d in decode:
            coll = "; ".join(
                f"{k} {v['count']}x {v['bytes'] / 2**20:.1f} MiB"
                for k, v in sorted(d.get("collectives", {}).items())
            )
            mem = (
                d["error"]
                if d.get("error")
                else f"{_gib(d['argument_bytes'])} + {_gib(d['temp_bytes'])} = "
                f"**{_gib(d['peak_bytes'])}** of {_gib(d['hbm_bytes'])}"
            )
            lines.append(
                f"| {d['size']} | {d['slice']} | {d['mesh']['data']} x {d['mesh']['model']} | "
                f"{d['batch']} | {d['inputs']} | {d['new_tokens']} | {mem} | "
                f"{(d.get('compiler_flops') or 0):.3g} ({(d.get('model_flops') or 0):.3g}) | "
                f"{coll} | "
                f"{'yes' if d.get('fits') else '**no**'} |"
            )
    return "\n".join(lines) + "\n"


DECODE = (("xxl", "v5e-64", 4), ("xxl", "v5e-16", 8))  # size, slice, model parallel


def decode_rows(log: dict, fresh: bool, which: set[str]) -> list[dict]:
    from scicot_jax.model.config import T5Config
    from scicot_jax.train.compile_only import decode_report

    out = []
    for size, slc, mp in DECODE:
        if size not in which:
            continue
        key = json.dumps({"decode": [size, slc, mp, 256, INPUTS, 128]})
        rec = None if fresh else log.get(key)
        if rec is None:
            r = decode_report(
                T5Config.preset(size, scan_layers=True),  # as gin/models/{size}.gin
                SLICES[slc],
                batch_size=256,
                input_length=INPUTS,
                max_decode_length=128,
                model_parallel=mp,
            )
            print(r.format(), flush=True)
            rec = dict(r.to_dict(), size=size, slice=slc, batch=256, inputs=INPUTS, new_tokens=128)
            rec.update(count_version=COUNT_VERSION, step_version=STEP_VERSION)
            rec["libtpu_init_args"] = os.environ.get("LIBTPU_INIT_ARGS")
            _keep_hlo(key, r.hlo_text)
            rec["cand"] = {"decode": [size, slc, mp, 256, INPUTS, 128]}
            log[key] = rec
            with LOG.open("a") as f:
                f.write(json.dumps(rec) + "\n")
        out.append(rec)
    return out


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--sizes", default=",".join(SIZES))
    p.add_argument("--slices", default=",".join(TABLE_SLICES + ("v5e-16",)))
    p.add_argument("--fresh", action="store_true", help="recompile even what the log holds")
    p.add_argument("--max-compiles", type=int, default=8, help="per cell")
    p.add_argument("--no-decode", action="store_true")
    p.add_argument("--no-compare", action="store_true", help="skip the comparison layouts")
    p.add_argument("--render-only", action="store_true", help="only what the log holds")
    p.add_argument("--stale", action="store_true", help="recompile old-count records")
    p.add_argument(
        "--recount", action="store_true", help="count collectives again from $FIT_TABLE_HLO_DIR"
    )
    p.add_argument("--out", default=str(OUT))
    p.add_argument("--one", help=argparse.SUPPRESS)  # a child: compile one candidate (JSON)
    a = p.parse_args(argv)
    if a.one:
        print("RECORD " + json.dumps(compile_in_process(Cand(**json.loads(a.one)))), flush=True)
        return
    os.environ.setdefault("ALLOW_MULTIPLE_LIBTPU_LOAD", "1")
    sizes, slices = a.sizes.split(","), a.slices.split(",")
    log = _load_all()
    if a.recount:
        recount(log)
    cells = []
    for size in sizes:
        for slc in TABLE_SLICES + ("v5e-16",):
            if slc not in slices or (slc not in TABLE_SLICES and (size, slc) not in EXTRA_CELLS):
                continue
            if a.render_only:
                tried = _logged(size, slc, log)
            else:
                tried = search(size, slc, log, a.fresh, a.max_compiles, a.stale)
            comp = [] if a.render_only or a.no_compare else compare(size, slc, log, a.fresh)
            comp = comp or [
                log[Cand(size, slc, b, m, pp, r).key()]
                for b, m, pp, r in COMPARE.get((size, slc), [])
                if Cand(size, slc, b, m, pp, r).key() in log
            ]
            if tried or comp:
                cells.append((size, slc, tried, comp))
    decode = [] if a.no_decode or a.render_only else decode_rows(log, a.fresh, set(sizes))
    decode = decode or [v for k, v in log.items() if k.startswith('{"decode"')]
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    missing = [
        f"{size} on {slc}"
        for size in SIZES
        for slc in TABLE_SLICES + ("v5e-16",)
        if (slc in TABLE_SLICES or (size, slc) in EXTRA_CELLS)
        and not any(
            r.get("fits") and r["cand"].get("size") == size and r["cand"].get("slice") == slc
            for r in log.values()
        )
    ]
    Path(a.out).write_text(render(cells, decode, missing))
    print(f"wrote {a.out}")


def _load_all() -> dict[str, dict]:
    """The log's records by candidate (the last one wins); compiled records from before loops
    were counted per iteration (no `loop_trips`) and steps from before STEP_VERSION are left
    out, so they get compiled again."""
    out: dict[str, dict] = {}
    if LOG.exists():
        for line in LOG.read_text().splitlines():
            rec = json.loads(line)
            if rec.get("compiler_flops") is not None and "loop_trips" not in rec:
                continue
            c = rec["cand"]
            if rec.get("step_version", 1) < STEP_VERSION:
                continue
            key = json.dumps(c) if "decode" in c else Cand(**c).key()
            out[key] = rec
    return out


def _logged(size: str, slc: str, log: dict) -> list[dict]:
    """The logged candidates of a cell in search order, up to the first that fits."""
    out = []
    for b in PER_CHIP[size]:
        for mp, ppd, remat in CANDIDATES:
            rec = log.get(Cand(size, slc, b, mp, ppd, remat).key())
            if rec is not None:
                out.append(rec)
                if rec.get("fits"):
                    return out
    return out


if __name__ == "__main__":
    main()
