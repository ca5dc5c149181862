"""How often each computation of compiled HLO text runs per step: while loops' trip counts.

XLA's cost analysis (the TPU compiler's `cost_analysis()` too) and a plain walk of the HLO count
a while loop's body once. The scanned layers of a step are such a loop, and libtpu's compiled
HLO gives it no `known_trip_count`; the trip count is read from the loop condition instead
(`counter < constant`, the counter starting from a constant), and `per_step_cost` adds the
body's cost for the iterations the compiler did not count.
"""

from __future__ import annotations

import dataclasses
import re
from typing import Any

_COMP = re.compile(r"^(ENTRY\s+)?%?([\w.\-]+)\s.*\{\s*$")
_INSTR = re.compile(r"^\s*(ROOT\s+)?%?([\w.\-]+)\s*=\s*(.*)$")
_WHILE = re.compile(r"\bwhile\(.*?%?([\w.\-]+)\), condition=%?([\w.\-]+), body=%?([\w.\-]+)")
_TRIP = re.compile(r'"known_trip_count":\{"n":"(\d+)"')
_CALLS = re.compile(r"\b(?:calls|to_apply|body|condition|branch_computations)=\{?%?([\w.\-]+)")
_NAME = re.compile(r"%([\w.\-]+)")
_PASS = ("copy", "bitcast", "convert", "reshape")  # ops that keep a scalar's value
COST_KEYS = ("flops", "bytes accessed", "transcendentals")


@dataclasses.dataclass
class Loop:
    """One while loop: its body, trip count (None: unknown, counted once) and runs per step."""

    body: str
    trip: int | None
    times: int  # body executions per step (enclosing loops' trips included)
    parent: str | None  # the body of the nearest enclosing loop
    assumed: bool = False  # trip unknown from the HLO: the caller's bound (a decode loop)


@dataclasses.dataclass
class Module:
    """Computations of HLO text: name -> instruction lines, header lines, the entry's name."""

    comps: dict[str, list[str]]
    headers: dict[str, str]
    entry: str | None
    _defs: dict[str, dict[str, str]] = dataclasses.field(default_factory=dict)

    def defs(self, comp: str) -> dict[str, str]:
        """Instruction name -> its text after '=', for one computation."""
        if comp not in self._defs:
            d = {}
            for line in self.comps.get(comp, []):
                m = _INSTR.match(line)
                if m:
                    d[m.group(2)] = m.group(3)
            self._defs[comp] = d
        return self._defs[comp]

    def root(self, comp: str) -> str | None:
        for line in self.comps.get(comp, []):
            m = _INSTR.match(line)
            if m and m.group(1):
                return m.group(3)
        return None


def parse(text: str) -> Module:
    """Splits HLO text into its computations."""
    comps: dict[str, list[str]] = {}
    headers: dict[str, str] = {}
    entry, current = None, None
    for line in text.splitlines():
        m = _COMP.match(line)
        if m and not line.startswith(" "):
            current = m.group(2)
            comps[current], headers[current] = [], line
            entry = current if m.group(1) else entry
        elif current is not None:
            comps[current].append(line)
    return Module(comps, headers, entry)


def _args(rhs: str, op: str) -> list[str]:
    """Operand names of `op(...)` in an instruction's text (balanced parentheses)."""
    i = rhs.find(op + "(")
    if i < 0:
        return []
    depth, j = 0, i + len(op)
    for j in range(i + len(op), len(rhs)):
        depth += {"(": 1, ")": -1}.get(rhs[j], 0)
        if depth == 0:
            break
    return _NAME.findall(rhs[i + len(op) : j])


def _constant(mod: Module, comp: str, name: str) -> int | None:
    """The integer a scalar instruction holds, through copies and converts; None if not constant."""
    for _ in range(16):
        rhs = mod.defs(comp).get(name)
        if rhs is None:
            return None
        m = re.search(r"\bconstant\((-?\d+)\)", rhs)
        if m:
            return int(m.group(1))
        op = next((p for p in _PASS if re.search(rf"\s{p}\(", " " + rhs)), None)
        if op is None:
            return None
        args = _args(rhs, op)
        if len(args) != 1:
            return None
        name = args[0]
    return None


def _counter(mod: Module, comp: str, name: str) -> int | None:
    """The tuple index of a loop-state element `name` reads (get-tuple-element of the param)."""
    rhs = mod.defs(comp).get(name, "")
    m = re.search(r"get-tuple-element\(.*\), index=(\d+)", rhs)
    return int(m.group(1)) if m else None


def _bound(mod: Module, cond: str) -> tuple[int, int, str] | None:
    """(counter index, constant, direction) of a condition `compare(counter, constant)`."""
    root = mod.root(cond)
    if root is None:
        return None
    comp, rhs, ops = cond, root, _args(root, "compare")
    if " fusion(" in " " + root:  # compare(param_a, param_b) inside: map its params back
        fused = re.search(r"calls=%?([\w.\-]+)", root)
        inner = mod.root(fused.group(1)) if fused else None
        if inner is None or "compare(" not in inner:
            return None
        outer, rhs = _args(root, "fusion"), inner
        ops = []
        for p in _args(inner, "compare"):
            k = re.search(r"parameter\((\d+)\)", mod.defs(fused.group(1)).get(p, ""))
            if k is None or int(k.group(1)) >= len(outer):
                return None
            ops.append(outer[int(k.group(1))])
    d = re.search(r"direction=(\w+)", rhs)
    if len(ops) != 2 or d is None:
        return None
    flip = {"LT": "GT", "LE": "GE", "GT": "LT", "GE": "LE"}
    a, b = ops
    ia, cb = _counter(mod, comp, a), _constant(mod, comp, b)
    if ia is not None and cb is not None:
        return ia, cb, d.group(1)
    ib, ca = _counter(mod, comp, b), _constant(mod, comp, a)
    if ib is not None and ca is not None and d.group(1) in flip:
        return ib, ca, flip[d.group(1)]
    return None


def _step(mod: Module, body: str, index: int) -> int | None:
    """The constant the body adds to loop-state element `index` (the counter's step)."""
    root = mod.root(body)
    elems = _args(root, "tuple") if root and re.search(r"\stuple\(", " " + root) else []
    rhs = mod.defs(body).get(elems[index], "") if index < len(elems) else ""
    args = _args(rhs, "add") if re.search(r"\sadd\(", " " + rhs) else []
    if len(args) != 2:
        return None
    for counter, step in (args, args[::-1]):
        c = _constant(mod, body, step)
        name = counter
        for _ in range(8):  # through copies to the get-tuple-element of the counter
            if _counter(mod, body, name) is not None:
                break
            inner = mod.defs(body).get(name, "")
            op = next((p for p in _PASS if re.search(rf"\s{p}\(", " " + inner)), None)
            name = (_args(inner, op) or [""])[0] if op else ""
        if c is not None and _counter(mod, body, name) == index:
            return c
    return None


def trip_count(mod: Module, caller: str, while_line: str) -> int | None:
    """Iterations of a while loop: its known_trip_count, else `counter < N` in its condition
    with the counter starting from a constant and stepping by a constant (libtpu unrolls some
    loops two steps at a time)."""
    known = _TRIP.search(while_line)
    if known:
        return int(known.group(1))
    w = _WHILE.search(while_line)
    if w is None:
        return None
    state, cond, body = w.group(1), w.group(2), w.group(3)
    bound = _bound(mod, cond)
    if bound is None:
        return None
    index, limit, direction = bound
    init_rhs = mod.defs(caller).get(state, "")
    elems = _args(init_rhs, "tuple") if re.search(r"\stuple\(", " " + init_rhs) else []
    start = _constant(mod, caller, elems[index]) if index < len(elems) else None
    step = _step(mod, body, index)
    if start is None or not step or step < 0:
        return None
    n = {"LT": limit - start, "LE": limit - start + 1}.get(direction)
    return max(-(-n // step), 0) if n is not None else None


def loops(mod: Module, unknown_trip: int | None = None) -> tuple[dict[str, int], list[Loop]]:
    """Runs per step of every computation reachable from the entry, and the while loops.

    unknown_trip: iterations to assume for a loop whose trip count the HLO does not give (a
    decode loop that stops early at EOS: its bound); None counts such a body once."""
    times: dict[str, int] = {}
    found: dict[str, Loop] = {}

    def visit(name: str, k: int, parent: str | None) -> None:
        if name not in mod.comps or times.get(name, 0) >= k:
            return
        times[name] = k
        for line in mod.comps[name]:
            w = _WHILE.search(line)
            if w:
                trip = trip_count(mod, name, line)
                assumed = trip is None and unknown_trip is not None
                trip = unknown_trip if assumed else trip
                body = w.group(3)
                found[body] = Loop(body, trip, k * (trip or 1), parent, assumed)
                visit(body, k * (trip or 1), body)
            for callee in _CALLS.findall(line):
                if not (w and callee == w.group(3)):
                    visit(callee, k, parent)

    if mod.entry:
        visit(mod.entry, 1, None)
    return times, list(found.values())


def _as_entry(mod: Module, body: str) -> str:
    """HLO text of a module whose entry is `body`, with only the computations it calls."""
    keep, todo = set(), [body]
    while todo:
        name = todo.pop()
        if name in keep or name not in mod.comps:
            continue
        keep.add(name)
        for line in mod.comps[name]:
            todo += _CALLS.findall(line)
    out = [f"HloModule loop_{body}", ""]
    for name, lines in mod.comps.items():
        if name in keep:
            header = mod.headers[name].removeprefix("ENTRY ")
            out += [("ENTRY " if name == body else "") + header, *lines, ""]
    return "\n".join(out)


def _cpu_client() -> Any:
    import jax

    try:
        return jax.devices("cpu")[0].client
    except RuntimeError:  # JAX_PLATFORMS without cpu: a client of its own
        from jax._src.lib import xla_client

        return xla_client.make_cpu_client()


def hlo_cost(text: str) -> dict[str, float]:
    """XLA's cost analysis (the one libtpu's compiled program reports) of HLO text."""
    from jaxlib import _hlo, _jax

    text = re.sub(r" stack_frame_id=\d+", "", text)  # frames live in the full module only
    cost = _jax.hlo_module_cost_analysis(_cpu_client(), _hlo.hlo_module_from_text(text))
    return {k: float(cost.get(k, 0.0)) for k in COST_KEYS}


def per_step_cost(
    text: str, cost: dict[str, float], unknown_trip: int | None = None
) -> tuple[dict[str, float], list[Loop]]:
    """The compiler's `cost` (each loop body counted once) with every loop's body counted as
    often as it runs: + (runs - 1) x the body's own cost (its nested loops' bodies taken out)."""
    mod = parse(text)
    _, found = loops(mod, unknown_trip)
    scaled = {k: float(cost.get(k, 0.0)) for k in COST_KEYS}
    counted = [lp for lp in found if lp.times > 1]
    counted_bodies = {lp.body for lp in counted}
    if not counted:
        return scaled, found
    need = {lp.body for lp in counted} | {c.body for c in found if c.parent in counted_bodies}
    body_cost = {b: hlo_cost(_as_entry(mod, b)) for b in need}
    for lp in counted:
        own = dict(body_cost[lp.body])
        for child in found:
            if child.parent == lp.body:
                for k in COST_KEYS:
                    own[k] -= body_cost[child.body][k]
        for k in COST_KEYS:
            scaled[k] += (lp.times - 1) * own[k]
    return scaled, found
