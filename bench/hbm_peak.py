"""Which buffers make a compiled program's temporary HBM: the peak of live bytes, and what is live.

  python bench/tpu_step.py --one ours,small,v5e:2x2 --layers 2 --dump ours_dump
  python bench/hbm_peak.py ours_dump [t5x_dump] --top 25

Reads the XLA dump of one compile (`--dump`, or `xla_dump_to`): the buffer assignment (each
value's size in the default memory space's temporary allocation) and the live ranges (each
value's first and last instruction in the schedule). Prints, per dump, the temporary allocation
(what `memory_analysis` reports, up to the compiler's other spaces), the most bytes live at once
in it and where, the difference between the two (space the heap packing could not reuse), and
the largest values live at that peak with the op that made them.
"""

from __future__ import annotations

import argparse
import re
from pathlib import Path

ALLOC = re.compile(r"^allocation (\d+): size (\d+),(.*?):\n", re.M)
VALUE = re.compile(r"value: <\d+ (\S+?)(\{[\d,]*\})? @\d+> \(size=(\d+),offset=\d+\): (.*)")
RANGE = re.compile(r"^    (\S+\{[\d,]*\}):(\d+)-(\d+)$", re.M)
STEP = re.compile(r"^    (\d+):(\S+)$", re.M)
OP_NAME = re.compile(r'^\s+%?(\S+) = .*?op_name="([^"]+)"')


def _one(folder: Path, suffix: str) -> Path:
    found = sorted(folder.glob(f"*{suffix}"))
    if not found:
        raise SystemExit(f"{folder}: no *{suffix} (compile with --dump {folder})")
    return found[0]


def temp_values(buffer_assignment: str) -> tuple[int, dict[str, tuple[int, str]]]:
    """Size of the default space's temporary allocation, and its values: name -> (bytes, shape)."""
    size, values = 0, {}
    starts = [m.start() for m in ALLOC.finditer(buffer_assignment)] + [len(buffer_assignment)]
    for a, b in zip(starts, starts[1:], strict=False):
        block = buffer_assignment[a:b]
        head = ALLOC.match(block)
        if "preallocated-temp" not in head.group(3) or "color" in head.group(3):
            continue  # another memory space (color n), or not a temporary
        size += int(head.group(2))
        for v in VALUE.finditer(block):
            values[v.group(1) + (v.group(2) or "{}")] = (int(v.group(3)), v.group(4).split("{")[0])
    return size, values


def peak(folder: Path) -> dict:
    """The temporary allocation, the live peak, when it happens and the values live then."""
    size, values = temp_values(
        _one(folder, "after_optimizations-buffer-assignment.txt").read_text()
    )
    live_text = _one(folder, "after_optimizations-live-range.txt").read_text()
    ranges = {m.group(1): (int(m.group(2)), int(m.group(3))) for m in RANGE.finditer(live_text)}
    steps = dict((int(i), name) for i, name in STEP.findall(live_text))
    delta = [0] * (max(steps, default=0) + 2)
    for name, (nbytes, _) in values.items():
        if name in ranges:
            first, last = ranges[name]
            delta[first] += nbytes
            delta[last + 1] -= nbytes
    live, top, at = 0, 0, 0
    for t, d in enumerate(delta):
        live += d
        if live > top:
            top, at = live, t
    ops = {}
    for line in _one(folder, "after_optimizations.txt").read_text().splitlines():
        m = OP_NAME.match(line)
        if m:
            ops[m.group(1)] = m.group(2)
    at_peak = [
        (nbytes, name, shape, ops.get(name.split("{")[0], ""))
        for name, (nbytes, shape) in values.items()
        if name in ranges and ranges[name][0] <= at <= ranges[name][1]
    ]
    return {
        "allocation": size,
        "peak": top,
        "at": steps.get(at, str(at)),
        "live": sorted(at_peak)[::-1],
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("dumps", nargs="+", type=Path, help="XLA dump folders (tpu_step.py --dump)")
    p.add_argument("--top", type=int, default=20)
    a = p.parse_args(argv)
    for folder in a.dumps:
        r = peak(folder)
        print(
            f"{folder}: temporary allocation {r['allocation'] / 1e6:.1f} MB, live peak "
            f"{r['peak'] / 1e6:.1f} MB at {r['at']}, unused by the packing "
            f"{(r['allocation'] - r['peak']) / 1e6:.1f} MB"
        )
        for nbytes, name, shape, op in r["live"][: a.top]:
            print(f"  {nbytes / 1e6:8.1f} MB  {name:30s} {shape:22s} {op[-80:]}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
