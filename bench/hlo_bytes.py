"""Where a compiled program's bytes go: optimized HLO text -> bytes per model region and op.

  python bench/tpu_step.py --one ours,small,v5e:2x2 --hlo ours.hlo
  python bench/tpu_step.py --t5x T5X_SRC --one t5x,small,v5e:2x2 --hlo t5x.hlo
  python bench/hlo_bytes.py ours.hlo t5x.hlo --top 25

Each top-level instruction (the entry computation and the bodies of while/conditional/call,
not the insides of fusions) counts its operands' and its output's bytes, an upper bound of what
XLA's cost analysis counts (it also knows slices and in-place updates). Instructions are grouped
by the op_name metadata jax writes: forward or backward (`transpose(`), encoder or decoder, and
the block (attention, mlp, norms, logits, loss, optimizer). With two files the regions are shown
side by side with their ratio. The TPU compiler also writes its own time estimate of each
op (`estimated_cycles` in the backend config); those are summed per region too (the measure
that found this step's excess: the byte sums over-count copies and in-place updates).
"""

from __future__ import annotations

import argparse
import collections
import re
import sys
from pathlib import Path
from typing import Any

DTYPE_BYTES = {"pred": 1, "s8": 1, "u8": 1, "s16": 2, "u16": 2, "f16": 2, "bf16": 2}
DTYPE_BYTES.update({"s32": 4, "u32": 4, "f32": 4, "s64": 8, "u64": 8, "f64": 8})
SHAPE = re.compile(r"\b(" + "|".join(DTYPE_BYTES) + r")\[([0-9,]*)\]")
# Opcodes that move no data of their own.
FREE = {"parameter", "get-tuple-element", "tuple", "bitcast", "constant", "after-all"}
FREE |= {"partition-id", "replica-id", "opt-barrier"}
CALLERS = {"while", "conditional", "call"}
BLOCKS = (
    "encoder_decoder_attention",
    "self_attention",
    "attention",
    "mlp",
    "layer_norm",
    "relpos_bias",
    "encoder_norm",
    "decoder_norm",
)


def shape_bytes(text: str) -> int:
    """Bytes of every array shape written in `text` (e.g. 'f32[2,3]{1,0}' -> 24)."""
    total = 0
    for dtype, dims in SHAPE.findall(text):
        n = 1
        for d in filter(None, dims.split(",")):
            n *= int(d)
        total += n * DTYPE_BYTES[dtype]
    return total


def _group(s: str) -> tuple[str, str, str]:
    """(before, inside, after) of the first top-level (...) in s; {...} (layouts) skipped."""
    depth = brace = 0
    start = -1
    for i, c in enumerate(s):
        if c == "{":
            brace += 1
        elif c == "}":
            brace -= 1
        elif brace:
            continue
        elif c == "(":
            start = i if depth == 0 else start
            depth += 1
        elif c == ")":
            depth -= 1
            if depth == 0:
                return s[:start], s[start + 1 : i], s[i + 1 :]
    return s, "", ""


def computations(text: str) -> tuple[dict[str, list[str]], str]:
    """Instruction lines per computation name, and the entry computation's name."""
    comps: dict[str, list[str]] = {}
    entry, cur = "", None
    for line in text.splitlines():
        head = re.match(r"^(ENTRY )?%?([\w.\-]+) .*\{\s*$", line)
        if head:
            cur = head.group(2)
            comps[cur] = []
            entry = cur if head.group(1) else entry
        elif line.startswith("}"):
            cur = None
        elif cur is not None and " = " in line:
            comps[cur].append(line.strip())
    return comps, entry


def _operand_bytes(operands: str, shapes: dict[str, str]) -> int:
    """Bytes of an operand list, written with shapes ('f32[2] %x') or as bare names ('%x')."""
    total = 0
    for operand in re.split(r",\s*(?![^{]*\})(?![^(]*\))", operands):
        ref = re.search(r"(%?[\w.\-]+)\s*$", operand)
        if SHAPE.search(operand):
            total += shape_bytes(operand)
        elif ref:
            total += shape_bytes(shapes.get(ref.group(1), ""))
    return total


def instructions(text: str) -> list[dict[str, Any]]:
    """Top-level instructions with opcode, bytes (operands + output) and jax's op_name."""
    comps, entry = computations(text)
    todo, seen, out = [entry], set(), []
    while todo:
        comp = todo.pop()
        if comp in seen or comp not in comps:
            continue
        seen.add(comp)
        shapes: dict[str, str] = {}  # instruction name -> its output shape, for bare operands
        for line in comps[comp]:
            name, rest = line.split(" = ", 1)
            name = name.replace("ROOT", "").strip()
            if rest.startswith("("):  # tuple-shaped output
                _, inner, rest = _group(rest)
                shape = f"({inner})"
            else:
                shape, _, rest = rest.partition(" ")
            op = re.match(r"([\w\-]+)\(", rest.strip())
            if not op:
                continue
            _, operands, attrs = _group(rest)
            shapes[name] = shape
            if op.group(1) in CALLERS:
                todo += re.findall(
                    r"(?:body=|condition=|to_apply=|branch_computations=\{)%?([\w.\-]+)", attrs
                )
                todo += re.findall(r"(?:true|false)_computation=%?([\w.\-]+)", attrs)
            meta = re.search(r'op_name="([^"]*)"', attrs)
            cycles = re.search(r'"estimated_cycles":"(\d+)"', attrs)
            size = (
                0 if op.group(1) in FREE else shape_bytes(shape) + _operand_bytes(operands, shapes)
            )
            out.append(
                dict(
                    name=name,
                    op=op.group(1),
                    shape=shape,
                    bytes=size,
                    cycles=int(cycles.group(1)) if cycles else 0,
                    op_name=meta.group(1) if meta else "",
                )
            )
    return out


def region(op_name: str) -> str:
    """'fwd|bwd' + stack + block of a jax op_name (layer numbers dropped)."""
    way = "bwd" if "transpose(" in op_name else "fwd"
    path = re.sub(r"\b(jvp|transpose|pjit|jit|remat|checkpoint)\(", "", op_name).replace(")", "")
    for stack in ("encoder", "decoder"):
        if f"{stack}/" in path or path.endswith(stack):
            block = next((b for b in BLOCKS if b in path), "other")
            return f"{way} {stack} {block}"
    for name in ("logits_dense", "token_embedder"):
        if name in path:
            return f"{way} {name}"
    if re.search(r"cross_entropy|xent|log_softmax|one_hot|argmax", path):
        return f"{way} loss"
    return "optimizer / other" if way == "fwd" else "bwd other"


def by_region(text: str, key: str = "bytes") -> collections.Counter:
    """Bytes (or estimated cycles: key="cycles") per region of one HLO text."""
    out: collections.Counter = collections.Counter()
    for ins in instructions(text):
        out[region(ins["op_name"])] += ins[key]
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("hlo", nargs="+", help="one or two optimized HLO text files")
    p.add_argument("--top", type=int, default=20, help="largest instructions to list per file")
    a = p.parse_args(argv)
    texts = [Path(f).read_text() for f in a.hlo[:2]]
    for key, unit, scale in (("bytes", "GiB", 2**30), ("cycles", "M estimated cycles", 1e6)):
        regions = [by_region(t, key) for t in texts]
        head = " | ".join(a.hlo[:2]) + (" | ratio" if len(texts) == 2 else "")
        print(f"{unit} per region: {head}")
        for k in sorted(set().union(*regions), key=lambda k: -regions[0].get(k, 0)):
            vals = [r.get(k, 0) for r in regions]
            ratio = f" {vals[0] / vals[1]:6.2f}" if len(vals) == 2 and vals[1] else ""
            print(f"  {k:40s} " + " ".join(f"{v / scale:8.3f}" for v in vals) + ratio)
        print(
            "  "
            + "total".ljust(40)
            + " "
            + " ".join(f"{sum(r.values()) / scale:8.3f}" for r in regions)
        )
    for f, t in zip(a.hlo, texts, strict=False):
        print(f"largest instructions of {f} (by estimated cycles):")
        for ins in sorted(instructions(t), key=lambda i: (-i["cycles"], -i["bytes"]))[: a.top]:
            print(
                f"  {ins['cycles']:9d} cyc {ins['bytes'] / 2**20:9.1f} MiB {ins['op']:12s}"
                f" {ins['shape'][:44]:44s} {ins['op_name'][-80:]}"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
