"""Our train step beside t5x's own, both compiled by the TPU compiler (libtpu, no TPU needed).

  python bench/tpu_step.py --t5x /path/to/t5x_src              # every cell, table on stdout
  python bench/tpu_step.py --t5x /path/to/t5x_src --presets small --topologies v5e:2x2
  python bench/tpu_step.py --t5x ... --markdown docs/step_speed_tpu.md

--t5x is a folder holding clones of google-research/t5x, google/airio and
google-research/jestimator (as t5x/, airio/, jestimator/); t5x's import chain also needs
`pip install -e '.[t5x-bench]'`. Without them the bench says so and exits 0 (nothing of t5x is
copied here; the test suite never needs it).

Same model and shapes on both sides: T5 v1.1 (small, base), vocab 32128, bf16 activations, fp32
weights, dropout 0, batch 64 of unpacked inputs 512 / targets 128, Adafactor (t5x's defaults:
decay_rate 0.8, factored, parameter scale, clipping 1), z-loss 1e-4, data parallel over every
chip. t5x: its EncoderDecoderModel, examples/t5 network.Transformer, adafactor.Adafactor,
PjitPartitioner and Trainer's own partitioned step (trainer.Trainer._partitioned_train_step) on
t5x's mesh for the topology. Ours: the trainer's make_setup / jit_train_step. Per chip, from
the compiled program: FLOPs and bytes accessed (cost_analysis), argument and temporary memory
(memory_analysis), the bytes the HLO's collectives move (runtime.aot.hlo_collectives), and the
compiler's estimated cycles summed over the HLO's ops (bench/hlo_bytes.py).
--jsonl FILE appends each cell as it finishes; --table-from FILE... prints the table of jsonl files.
Each compile runs in its own process (libtpu keeps state between compiles).

Attention logits: ours computes them and the softmax in float32; t5x's network does so only with
float32_attention_logits=True (its default is bfloat16), so t5x is built with float32 logits
unless --t5x-logits bfloat16. Left different: t5x adds the relative-position bias in bfloat16
(ours float32) and recomputes it in every layer (ours once per stack); ours also logs the
gradient norm. --layers N compiles both with N encoder and N decoder layers (quick HLO diffs);
--hlo FILE (with --one) keeps the optimized HLO; --dump DIR (with --one) the compiler's buffer
assignment and live ranges, which bench/hbm_peak.py reads.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from contextlib import nullcontext
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from variants import TPU_VARIANTS  # noqa: E402  (bench/variants.py: the replaced forms)

PRESETS = ("small", "base")
# 4 and 16 chips. v4 names count chips as x*y*z; the compile-only v4 topology has one device
# per TensorCore (2 a chip), so there the figures are per core and the batch splits over 8 or 32.
TOPOLOGIES = ("v5e:2x2", "v5e:4x4", "v4:2x2x1", "v4:2x2x4")
VOCAB, BATCH, INPUTS, TARGETS = 32128, 64, 512, 128
T5X_REPOS = ("t5x", "airio", "jestimator")
HOW_TO_GET_T5X = (
    "t5x source not found: clone it and its two git dependencies side by side, e.g.\n"
    "  mkdir t5x_src && cd t5x_src\n"
    "  git clone https://github.com/google-research/t5x\n"
    "  git clone https://github.com/google/airio\n"
    "  git clone https://github.com/google-research/jestimator\n"
    "  pip install -e '<this repo>[t5x-bench]'   # grain, cached-property, tensorboard, libtpu\n"
    "then pass --t5x t5x_src"
)
METRICS = ("flops", "bytes", "argument", "temp", "collective", "cycles")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--t5x", default=os.environ.get("T5X_SRC"), help="folder of the t5x clones")
    p.add_argument("--presets", default=",".join(PRESETS))
    p.add_argument("--topologies", default=",".join(TOPOLOGIES))
    p.add_argument("--systems", default="ours,t5x")
    p.add_argument("--batch", type=int, default=BATCH)
    p.add_argument("--input-len", type=int, default=INPUTS)
    p.add_argument("--target-len", type=int, default=TARGETS)
    p.add_argument("--json", default=None, help="also write every cell's figures here")
    p.add_argument("--markdown", default=None, help="also write the table here (markdown)")
    p.add_argument("--jsonl", default=None, help="append each cell's figures here as it finishes")
    p.add_argument(
        "--table-from",
        nargs="+",
        default=None,
        help="print the table of the cells in these jsonl files; no compile",
    )
    p.add_argument(
        "--layers", type=int, default=None, help="encoder and decoder layers (default: preset's)"
    )
    p.add_argument(
        "--t5x-logits",
        choices=("float32", "bfloat16"),
        default="float32",
        help="t5x's attention logits/softmax dtype: float32 as ours (t5x's default is bfloat16)",
    )
    p.add_argument("--hlo", default=None, help="with --one: write the optimized HLO here")
    p.add_argument(
        "--dump",
        default=None,
        help="with --one: XLA dump folder (buffer assignment, live ranges: bench/hbm_peak.py)",
    )
    p.add_argument(
        "--variant",
        default=None,
        choices=sorted(TPU_VARIANTS),
        help="compile ours in a form the code replaced (bench/variants.py)",
    )
    p.add_argument(
        "--xla",
        action="append",
        default=[],
        metavar="OPTION=VALUE",
        help="an XLA compiler option for every compile (e.g. xla_msa_enable=false), repeatable",
    )
    p.add_argument("--one", default=None, help=argparse.SUPPRESS)  # system,preset,topology
    return p.parse_args(argv)


def t5x_paths(root: str | None) -> list[str] | None:
    """The three source folders t5x imports from, or None when any is missing."""
    if not root:
        return None
    paths = [str(Path(root) / r) for r in T5X_REPOS]
    ok = all((Path(p) / r).is_dir() for p, r in zip(paths, T5X_REPOS, strict=True))
    return paths if ok and (Path(paths[0]) / "t5x" / "trainer.py").exists() else None


def measure(compiled: Any) -> dict[str, Any]:
    """Per-chip cost and memory of a compiled TPU program, and its collectives."""
    from scicot_jax.runtime import aot

    cost = compiled.cost_analysis()
    cost = cost[0] if isinstance(cost, list | tuple) else cost
    mem = compiled.memory_analysis()
    text = compiled.as_text()
    coll = aot.hlo_collectives(text)
    from hlo_bytes import by_region

    return {
        "flops": float(cost["flops"]),
        "bytes": float(cost["bytes accessed"]),
        "argument": int(mem.argument_size_in_bytes),
        "output": int(mem.output_size_in_bytes),
        "alias": int(mem.alias_size_in_bytes),
        "temp": int(mem.temp_size_in_bytes),
        "collective": sum(c["bytes"] for c in coll.values()),
        "collectives": coll,
        # the compiler's own time estimate per op, summed (loop bodies once; bench/hlo_bytes.py)
        "cycles": sum(by_region(text, "cycles").values()),
    }


def compile_options(a: argparse.Namespace) -> dict[str, Any]:
    """XLA options for the compile: --xla's, and the dump folder of --dump, if any."""
    out: dict[str, Any] = dict(option.split("=", 1) for option in a.xla)
    if a.dump:
        out.update(xla_dump_to=a.dump, xla_dump_hlo_as_text=True, xla_dump_hlo_pass_re="")
    return out


def preset_config(preset: str, a: argparse.Namespace) -> Any:
    """The preset's T5Config, with --layers encoder and decoder layers when given."""
    from scicot_jax.model import T5Config

    if a.layers is None:
        return T5Config.preset(preset)
    return T5Config.preset(preset, num_encoder_layers=a.layers, num_decoder_layers=a.layers)


def ours_compiled(preset: str, devices: list, a: argparse.Namespace) -> Any:
    """Our trainer's step (make_setup / jit_train_step) compiled for `devices` on abstract state."""
    import flax.linen as nn
    import jax
    import jax.numpy as jnp

    from scicot_jax.runtime import partitioning as part
    from scicot_jax.train.compile_only import abstract_batch
    from scicot_jax.train.optimizers import OptimizerConfig
    from scicot_jax.train.state import TrainState, abstract_like, t5_spec
    from scicot_jax.train.step import LossConfig
    from scicot_jax.train.trainer import TrainConfig, jit_train_step, make_setup

    model = preset_config(preset, a).replace(vocab_size=VOCAB, dtype="bfloat16", dropout_rate=0.0)
    lengths = {"inputs": a.input_len, "targets": a.target_len}
    config = TrainConfig(
        model_dir="",
        train_steps=1000,
        model=model,
        feature_lengths=lengths,
        optimizer=OptimizerConfig(name="adafactor", learning_rate=1e-3),
        loss=LossConfig(z_loss=1e-4, loss_normalizing_factor=None),  # t5x base.gin's
    )
    mesh = part.make_mesh(1, devices=devices)
    spec = t5_spec(model, lengths)
    su = make_setup(config, spec, mesh)
    state = TrainState(
        step=jax.ShapeDtypeStruct((), jnp.int32, sharding=su.replicated),
        params=abstract_like(su.abstract_params, su.param_shardings),
        opt_state=abstract_like(su.abstract_opt_state, su.opt_shardings),
    )
    batch = abstract_batch(a.batch, lengths, su.data, packed=False)
    with jax.set_mesh(mesh), nn.logical_axis_rules(su.rules):
        lowered = jit_train_step(su, spec, config).lower(state, batch)
        return lowered.compile(compiler_options=compile_options(a))


def t5x_compiled(preset: str, devices: list, a: argparse.Namespace) -> Any:
    """t5x's own partitioned train step (Trainer._partitioned_train_step) for `devices`."""
    sys.path[:0] = t5x_paths(a.t5x) or []
    import jax
    import jax.numpy as jnp
    import seqio
    from t5x import adafactor, models, partitioning, trainer, utils
    from t5x.examples.t5 import network

    size = preset_config(preset, a)
    cfg = network.T5Config(
        vocab_size=VOCAB,
        dtype=jnp.bfloat16,
        emb_dim=size.d_model,
        num_heads=size.num_heads,
        num_encoder_layers=size.num_encoder_layers,
        num_decoder_layers=size.num_decoder_layers,
        head_dim=size.d_kv,
        mlp_dim=size.d_ff,
        mlp_activations=("gelu", "linear"),
        dropout_rate=0.0,
        logits_via_embedding=False,
        float32_attention_logits=a.t5x_logits == "float32",
    )
    vocab = seqio.PassThroughVocabulary(VOCAB)
    model = models.EncoderDecoderModel(  # t5x/examples/t5/t5_1_1/base.gin's settings
        network.Transformer(cfg),
        input_vocabulary=vocab,
        output_vocabulary=vocab,
        optimizer_def=adafactor.Adafactor(
            decay_rate=0.8,
            step_offset=0,
            logical_factor_rules=adafactor.standard_logical_factor_rules(),
        ),
        z_loss=1e-4,
        label_smoothing=0.0,
        loss_normalizing_factor=None,
    )
    mesh = partitioning.get_mesh((1, 1, 1, 1), input_devices=devices, input_local_devices=devices)

    class OnTopology(partitioning.PjitPartitioner):
        """t5x's partitioner on the topology's devices (jax.devices() here is the CPU)."""

        @property
        def mesh(self) -> Any:
            return mesh

    partitioner = OnTopology(num_partitions=1)
    shapes = {"encoder_input_tokens": (a.batch, a.input_len)}
    for k in ("decoder_input_tokens", "decoder_target_tokens", "decoder_loss_weights"):
        shapes[k] = (a.batch, a.target_len)
    types = {k: jnp.int32 for k in shapes}
    init = utils.TrainStateInitializer(
        model.optimizer_def, model.get_initial_variables, shapes, partitioner, types
    )
    t = trainer.Trainer(
        model,
        init.global_train_state_shape,
        partitioner,
        eval_names=[],
        summary_dir=None,
        train_state_axes=init.train_state_axes,
        rng=jax.random.PRNGKey(0),
        learning_rate_fn=lambda step: jnp.asarray(1e-3, jnp.float32),
        num_microbatches=None,
    )
    batch = {k: jax.ShapeDtypeStruct(s, types[k]) for k, s in shapes.items()}
    lowered = t._partitioned_train_step.lower(init.global_train_state_shape, batch)
    return lowered.compile(compiler_options=compile_options(a))


def _topology_label(cell: dict[str, Any]) -> str:
    """'v4:2x2x1 (4 chips, 8 devices)': chips, and devices where a chip holds several."""
    chips, devices = cell.get("chips", "?"), cell.get("devices", cell.get("chips"))
    extra = f", {devices} devices" if devices != chips else ""
    return f"{cell['topology']} ({chips} chips{extra})"


def run_one(a: argparse.Namespace) -> None:
    """Child process: compile one (system, preset, topology) and print its figures as JSON."""
    from scicot_jax.runtime import aot

    system, preset, topology = a.one.split(",")
    devices = aot.topology_devices(topology)
    build = ours_compiled if system == "ours" else t5x_compiled
    form = TPU_VARIANTS[a.variant]() if a.variant and system == "ours" else nullcontext()
    t0 = time.perf_counter()
    with form:
        compiled = build(preset, devices, a)
    chips = len({tuple(d.coords) for d in devices})
    out = {"system": system, "preset": preset, "topology": topology, "chips": chips}
    out["devices"] = len(devices)
    out.update(_labels(a, system))
    out.update(measure(compiled), compile_s=time.perf_counter() - t0)
    if a.hlo:
        Path(a.hlo).write_text(compiled.as_text())
    print("RESULT " + json.dumps(out), flush=True)


def spawn(a: argparse.Namespace, system: str, preset: str, topology: str) -> dict[str, Any]:
    """Runs one compile in a child process; its figures, or {'error': last lines}."""
    cmd = [sys.executable, __file__, "--one", f"{system},{preset},{topology}"]
    cmd += ["--batch", str(a.batch), "--input-len", str(a.input_len)]
    cmd += ["--target-len", str(a.target_len)]
    if a.layers is not None:
        cmd += ["--layers", str(a.layers)]
    cmd += ["--t5x-logits", a.t5x_logits]
    if a.t5x:
        cmd += ["--t5x", a.t5x]
    if a.variant:
        cmd += ["--variant", a.variant]
    for option in a.xla:
        cmd += ["--xla", option]
    p = subprocess.run(cmd, capture_output=True, text=True, check=False)
    for line in p.stdout.splitlines():
        if line.startswith("RESULT "):
            return json.loads(line[len("RESULT ") :])
    tail = (p.stderr or p.stdout).strip().splitlines()[-3:]
    cell = {"system": system, "preset": preset, "topology": topology, "error": " | ".join(tail)}
    return cell | _labels(a, system)


def _labels(a: argparse.Namespace, system: str) -> dict[str, Any]:
    """What a cell was compiled with beyond the defaults: layers, variant, XLA options."""
    out: dict[str, Any] = {}
    if a.layers is not None:
        out["layers"] = a.layers
    if system == "t5x":
        out["t5x_logits"] = a.t5x_logits
    if a.variant and system == "ours":
        out["variant"] = a.variant
    if a.xla:
        out["xla"] = sorted(a.xla)
    return out


def _fmt(metric: str, v: float) -> str:
    if metric == "flops":
        return f"{v / 1e12:.3f} T"
    if metric == "cycles":
        return f"{v / 1e6:.2f} M"
    return f"{v / 2**30:.2f} GiB" if v >= 2**30 else f"{v / 2**20:.1f} MiB"


def _model(c: dict[str, Any]) -> str:
    layers = c.get("layers")
    return f"T5-{c['preset']}" + (f" ({layers}+{layers} layers)" if layers is not None else "")


def _key(c: dict[str, Any]) -> tuple:
    """What pairs ours with t5x's cell: model, topology and the XLA options both compiled with."""
    return (_model(c), c["topology"], tuple(c.get("xla", ())))


def _label(c: dict[str, Any]) -> str:
    """The model column: model, then ours' variant and the XLA options, if any."""
    extra = [c["variant"]] if c.get("variant") else []
    return ", ".join([_model(c), *extra, *c.get("xla", ())])


def table(cells: list[dict[str, Any]]) -> str:
    """Markdown: a row per ours cell (and per t5x cell without one): ours | t5x | ours/t5x."""
    t5x_by = {_key(c): c for c in cells if c["system"] == "t5x"}
    ours_cells = [c for c in cells if c["system"] == "ours"]
    paired = {_key(c) for c in ours_cells}
    pairs = [(o, t5x_by.get(_key(o), dict(o, system="t5x", error="not run"))) for o in ours_cells]
    pairs += [(None, t) for k, t in t5x_by.items() if k not in paired]
    head = ["model", "topology", "t5x logits"] + [f"{m} ours / t5x (ratio)" for m in METRICS]
    rows = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for ours, t5x in sorted(pairs, key=lambda p: (_key(p[0] or p[1]), _label(p[0] or p[1]))):
        row = [_label(ours or t5x), _topology_label(ours or t5x), t5x.get("t5x_logits", "-")]
        for m in METRICS:
            if not ours or "error" in ours or "error" in t5x or m not in ours or m not in t5x:
                row.append("n/a")
                continue
            ratio = ours[m] / t5x[m] if t5x[m] else float("nan")
            row.append(f"{_fmt(m, ours[m])} / {_fmt(m, t5x[m])} ({ratio:.3f})")
        rows.append("| " + " | ".join(row) + " |")
    errors = [
        f"- {c['system']} {_model(c)} {c['topology']}: {c['error']}" for c in cells if "error" in c
    ]
    return "\n".join(rows + ([""] + errors if errors else []))


def main(argv: list[str] | None = None) -> int:
    a = parse_args(argv)
    if a.one:
        run_one(a)
        return 0
    if a.table_from:
        lines = [line for f in a.table_from for line in Path(f).read_text().splitlines()]
        print(table([json.loads(line) for line in lines if line.strip()]))
        return 0
    systems = a.systems.split(",")
    if "t5x" in systems and t5x_paths(a.t5x) is None:
        print(HOW_TO_GET_T5X)
        return 0
    cells = []
    for preset in a.presets.split(","):
        for topo in a.topologies.split(","):
            for system in systems:
                cell = spawn(a, system, preset, topo)
                cells.append(cell)
                if a.jsonl:
                    with open(a.jsonl, "a") as f:
                        f.write(json.dumps(cell) + "\n")
                shown = {m: cell[m] for m in METRICS if m in cell} or cell.get("error")
                print(f"{system} {preset} {topo}: {shown}", flush=True)
    text = table(cells)
    print(text)
    if a.json:
        Path(a.json).write_text(json.dumps(cells, indent=2))
    if a.markdown:
        Path(a.markdown).write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
