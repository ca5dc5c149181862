"""What the TPU compiler charges a token-embedding lookup: gather (ours) vs one-hot (t5x's).

  python bench/tpu_lookup_cost.py                          # v4:2x2x1 and v5e:2x2, 1280 / 10240 tokens
  python bench/tpu_lookup_cost.py --topology v5e:2x2 --tokens 10240

One chip of the topology compiles the lookup of `tokens` rows of a float32 [vocab, d_model] table
(cast to bf16, as the model does), forward alone and with its gradient, in two forms: ours,
`jnp.take` (a gather; its gradient a scatter-add), and t5x's, a bf16 one-hot contraction. Per
program: the cost analysis' bytes accessed and FLOPs, and the compiler's own time estimate
(`estimated_cycles` summed over the HLO's ops, bench/hlo_bytes.py). bench/tpu_step.py's
"bytes" column counts what the cost analysis charges the gather, which is many times the rows
it moves, while the time estimate stays small; this bench measures that charge apart.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

CELLS = ("v4:2x2x1,1280", "v5e:2x2,10240")  # 2 and 16 rows of 512 + 128 tokens per device


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--topology", default=None, help="one topology (with --tokens)")
    p.add_argument("--tokens", type=int, default=None, help="rows looked up per device")
    p.add_argument("--vocab", type=int, default=32128)
    p.add_argument("--d-model", type=int, default=512)
    return p.parse_args(argv)


def lookups(vocab: int) -> dict[str, Any]:
    """form -> fn(table f32 [V, D], ids [T]) -> bf16 [T, D]."""
    import jax
    import jax.numpy as jnp

    def gather(table: jax.Array, ids: jax.Array) -> jax.Array:
        return jnp.take(table, ids, axis=0, mode="clip").astype(jnp.bfloat16)

    def one_hot(table: jax.Array, ids: jax.Array) -> jax.Array:
        hot = jax.nn.one_hot(ids, vocab, dtype=jnp.bfloat16)
        return jnp.einsum("tv,vd->td", hot, table.astype(jnp.bfloat16))

    return {"gather (ours)": gather, "one-hot (t5x)": one_hot}


def measure(topology: str, tokens: int, vocab: int, d_model: int) -> list[dict[str, Any]]:
    """One row per (form, program) compiled for one chip of `topology`."""
    import jax
    import jax.numpy as jnp
    from hlo_bytes import by_region
    from jax.sharding import Mesh, NamedSharding, PartitionSpec

    from scicot_jax.runtime import aot

    one = NamedSharding(Mesh(aot.topology_devices(topology)[:1], ("d",)), PartitionSpec())
    args = (
        jax.ShapeDtypeStruct((vocab, d_model), jnp.float32, sharding=one),
        jax.ShapeDtypeStruct((tokens,), jnp.int32, sharding=one),
        jax.ShapeDtypeStruct((tokens, d_model), jnp.float32, sharding=one),
    )
    rows = []
    for form, lookup in lookups(vocab).items():
        loss = lambda t, ids, g, f=lookup: jnp.sum(f(t, ids).astype(jnp.float32) * g)
        for program, fn in (("forward", loss), ("forward + gradient", jax.value_and_grad(loss))):
            compiled = jax.jit(fn).lower(*args).compile()
            cost = compiled.cost_analysis()
            cost = cost[0] if isinstance(cost, list | tuple) else cost
            rows.append(
                {
                    "topology": topology,
                    "tokens": tokens,
                    "form": form,
                    "program": program,
                    "bytes": float(cost["bytes accessed"]),
                    "flops": float(cost["flops"]),
                    "cycles": sum(by_region(compiled.as_text(), "cycles").values()),
                }
            )
    return rows


def table(rows: list[dict[str, Any]]) -> str:
    """Markdown, one line per program."""
    out = [
        "| topology | tokens | lookup | program | bytes accessed | estimated cycles | FLOPs |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        out.append(
            f"| {r['topology']} | {r['tokens']} | {r['form']} | {r['program']} |"
            f" {r['bytes'] / 1e6:.1f} MB | {r['cycles'] / 1e3:.0f} K | {r['flops'] / 1e9:.2f} G |"
        )
    return "\n".join(out)


def main(argv: list[str] | None = None) -> list[dict[str, Any]]:
    a = parse_args(argv)
    cells = [f"{a.topology},{a.tokens or 1280}"] if a.topology else list(CELLS)
    rows = []
    for cell in cells:
        topology, tokens = cell.split(",")
        rows += measure(topology, int(tokens), a.vocab, a.d_model)
    print(table(rows))
    return rows


if __name__ == "__main__":
    main()
