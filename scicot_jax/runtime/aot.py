"""Compile a jitted step for a TPU slice on any host (libtpu) and report whether it fits.

    devices = topology_devices("v5e:4x4")            # no TPU needed, libtpu compiles for it
    mesh = make_mesh(model_parallel=2, devices=devices)
    report = compile_report(jax.jit(step, ...), abstract_args, mesh, model_flops=...)
    print(report.format()); report.shortfall()       # None when it fits

Memory, FLOPs and the collectives come from the TPU compiler's own analyses of the compiled
program (per chip); nothing here is estimated.
"""

from __future__ import annotations

import dataclasses
import os
import re
import time
from collections.abc import Sequence
from typing import Any

import jax
from jax.sharding import Mesh

from scicot_jax import platforms
from scicot_jax.runtime import hlo_loops

GiB = 2**30

# HBM per chip by device_kind (Cloud TPU docs); the compiler reserves a little of it.
HBM_BYTES = {
    "TPU v2": 8 * GiB,
    "TPU v3": 16 * GiB,
    "TPU v4": 32 * GiB,
    "TPU v4 lite": 8 * GiB,
    "TPU v5 lite": 16 * GiB,  # v5e
    "TPU v5": 95 * GiB,  # v5p
    "TPU v5p": 95 * GiB,
    "TPU v6 lite": 32 * GiB,  # v6e (Trillium)
}

COLLECTIVES = (
    "all-reduce",
    "all-gather",
    "reduce-scatter",
    "all-to-all",
    "collective-permute",
    "ragged-all-to-all",
    "collective-broadcast",
)

_BYTES = {"pred": 1, "s8": 1, "u8": 1, "bf16": 2, "f16": 2, "s16": 2, "u16": 2}
_BYTES.update({"f32": 4, "s32": 4, "u32": 4, "f64": 8, "s64": 8, "u64": 8, "c64": 8})
_ARRAY = re.compile(r"\b([a-z]+\d*)\[([\d,]*)\]")
_OP = re.compile(
    r"^\s*(?:ROOT\s+)?%?[\w.\-]+\s*=\s*(.*?)\s(" + "|".join(COLLECTIVES) + r")(-start)?\((.*)$"
)
_CALLER = re.compile(r"^\s*(?:ROOT\s+)?%?([\w.\-]+)\s*=.*\sfusion\(")
_USED = re.compile(r"Used ([\d.]+)([KMGT]?)i?B? of ([\d.]+)([KMGT]?)i?B? hbm")
_NEEDS = re.compile(
    r"memory required for ([\w ]+?) \(([\d.]+)([KMGT]?)i?B?\) exceeds available HBM "
    r"\(([\d.]+)([KMGT]?)i?B?\)"
)
_UNITS = {"": 1, "K": 2**10, "M": 2**20, "G": 2**30, "T": 2**40}


def size(n: float) -> str:
    """Bytes as GiB, or MiB below one GiB."""
    return f"{n / GiB:.2f} GiB" if abs(n) >= GiB else f"{n / 2**20:.1f} MiB"


def topology_devices(name: str, num_slices: int = 1) -> list[Any]:
    """Abstract TPU devices of a slice name `topologies.get_topology_desc` takes ("v5e:4x4").

    Works on a CPU host with libtpu installed; ALLOW_MULTIPLE_LIBTPU_LOAD lets several such
    processes (tests, a second compile) share the machine's libtpu lockfile.
    """
    from jax.experimental import topologies

    os.environ.setdefault("ALLOW_MULTIPLE_LIBTPU_LOAD", "1")
    platforms.set_compiler_flags()  # in case jax loaded before scicot_jax
    try:
        kwargs = {"num_slices": num_slices} if num_slices > 1 else {}
        devices = topologies.get_topology_desc(platform="tpu", topology_name=name, **kwargs)
    except Exception as e:  # libtpu missing or an unknown name: one line that says which
        raise ValueError(f"COMPILE_TOPOLOGY={name!r}: no TPU topology ({e})") from e
    _parse_libtpu_flags()
    return list(devices.devices)


_FLAGS_PARSED = False


def _parse_libtpu_flags() -> None:
    """libtpu reads LIBTPU_INIT_ARGS when a TPU client is created, not for a topology: where
    JAX_PLATFORMS leaves the TPU out (a CPU host, platforms.py), create one once (it fails
    without a TPU) so the compiler runs with the flags (the remat stack size)."""
    global _FLAGS_PARSED
    platforms_ = jax.config.jax_platforms or "tpu"
    if _FLAGS_PARSED or "tpu" in platforms_.split(","):
        return
    from jax._src.lib import xla_client

    _FLAGS_PARSED = True
    try:
        xla_client.make_c_api_client("tpu", {}, None)
    except Exception:  # noqa: BLE001, S110 - "No jellyfish device found": the flags are read
        pass


def chip_hbm_bytes(device: Any, devices: Sequence[Any] = ()) -> int | None:
    """HBM of one device, from the device kind (None for unknown kinds): the chip's, split
    among the `devices` on the same chip (libtpu's v4 topologies list each of a chip's two
    TensorCores as a device, 16 of the chip's 32 GiB each; v5e and v5p list one per chip)."""
    hbm = HBM_BYTES.get(getattr(device, "device_kind", ""))
    coords = getattr(device, "coords", None)
    sharing = sum(1 for d in devices if coords is not None and d.coords == coords) or 1
    return hbm // sharing if hbm else None


@dataclasses.dataclass
class CompileReport:
    """What the compiler says about one step on one slice (all sizes per chip)."""

    what: str
    topology: str
    mesh: dict[str, int]
    device_kind: str
    hbm_bytes: int | None
    argument_bytes: int = 0
    output_bytes: int = 0
    alias_bytes: int = 0
    temp_bytes: int = 0
    compiler_flops: float | None = None
    model_flops: float | None = None  # the FLOP model's count for this step, per chip
    bytes_accessed: float | None = None  # the compiler's HBM bytes read + written, per chip
    loop_trips: list[int | None] = dataclasses.field(default_factory=list)  # None: unknown
    assumed_trips: int = 0  # loops whose trip count is the caller's bound, not the HLO's
    collectives: dict[str, dict[str, int]] = dataclasses.field(default_factory=dict)
    compile_s: float = 0.0
    error: str | None = None  # the compiler's out-of-memory message, when it refused
    hlo_text: str | None = dataclasses.field(default=None, repr=False)  # the compiled HLO

    @property
    def peak_bytes(self) -> int:
        """Live bytes at once: arguments + temporaries + outputs not aliased to an argument."""
        return self.argument_bytes + self.temp_bytes + self.output_bytes - self.alias_bytes

    @property
    def collective_bytes(self) -> int:
        return sum(c["bytes"] for c in self.collectives.values())

    def shortfall(self) -> str | None:
        """None when the step fits in HBM, else one line naming by how much it does not."""
        if self.error:
            return f"{self.what} does not fit {self.topology} {self._mesh()}: {self.error}"
        if self.hbm_bytes and self.peak_bytes > self.hbm_bytes:
            return (
                f"{self.what} does not fit {self.topology} {self._mesh()}: needs "
                f"{self.peak_bytes / GiB:.2f} GiB per chip, {self.device_kind} has "
                f"{self.hbm_bytes / GiB:.2f} GiB ({(self.peak_bytes - self.hbm_bytes) / GiB:.2f} "
                "GiB short)"
            )
        return None

    def _mesh(self) -> str:
        return "mesh " + " x ".join(f"{k}={v}" for k, v in self.mesh.items())

    def format(self) -> str:
        """A few human lines: memory vs HBM, FLOPs vs the model's, collectives."""
        hbm = f"{self.hbm_bytes / GiB:.2f} GiB" if self.hbm_bytes else "unknown"
        lines = [
            f"{self.what} on {self.topology} ({self.device_kind}, {self._mesh()}), "
            f"compiled in {self.compile_s:.1f}s",
        ]
        if self.error:
            lines.append(f"  compile refused: {self.error}")
        else:
            lines.append(
                f"  per chip: arguments {size(self.argument_bytes)} + temporaries "
                f"{size(self.temp_bytes)} + outputs {size(self.output_bytes)} - aliased "
                f"{size(self.alias_bytes)} = {size(self.peak_bytes)} of {hbm} HBM"
            )
        if self.compiler_flops is not None:
            ratio = f" ({self.compiler_flops / self.model_flops:.3f}x)" if self.model_flops else ""
            model = f"{self.model_flops:.4g}" if self.model_flops else "n/a"
            lines.append(
                f"  FLOPs per chip: compiler {self.compiler_flops:.4g}, model {model}{ratio}"
            )
        if self.bytes_accessed is not None:
            lines.append(f"  HBM bytes accessed per chip: {size(self.bytes_accessed)}")
        if self.loop_trips:
            trips = ", ".join(
                "unknown (counted once)" if t is None else str(t) for t in self.loop_trips
            )
            bound = f" ({self.assumed_trips} of them the loop bound, an upper limit)"
            lines.append(
                f"  while loops: {len(self.loop_trips)}, trip counts {trips}"
                + (bound if self.assumed_trips else "")
            )
        if self.collectives:
            parts = [
                f"{k} x{c['count']} {size(c['bytes'])}" for k, c in sorted(self.collectives.items())
            ]
            lines.append(
                f"  collectives per step per chip: {size(self.collective_bytes)} "
                f"({'; '.join(parts)})"
            )
        elif not self.error:
            lines.append("  collectives: none")
        lines.append("  fits" if self.shortfall() is None else f"  {self.shortfall()}")
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d.pop("hlo_text")
        d.update(peak_bytes=self.peak_bytes, collective_bytes=self.collective_bytes)
        d["fits"] = self.shortfall() is None
        return d


def _shape_bytes(shape: str, start: bool) -> int:
    """Bytes of an HLO result shape; an async -start's tuple holds (operands, results, ...)."""
    arrays = []
    for dt, dims in _ARRAY.findall(shape):
        n = 1
        for d in filter(None, dims.split(",")):
            n *= int(d)
        arrays.append(n * _BYTES.get(dt, 4))
    if not arrays:
        return 0
    if start:  # (inputs..., outputs..., [sync flags]): the result is the second half
        big = [a for a in arrays if a > 8] or arrays
        return sum(big[len(big) // 2 :]) if len(big) > 1 else big[0]
    return sum(arrays)


def hlo_collectives(hlo_text: str, unknown_trip: int | None = None) -> dict[str, dict[str, int]]:
    """Collectives of compiled HLO text: kind -> {count, bytes} executed per step per chip.

    bytes: each op's result size. Ops inside while loops (scanned layers, microbatches) count
    once per iteration (hlo_loops reads the trip count from the loop's condition; a loop it
    cannot read runs `unknown_trip` times, or once).

    libtpu writes one asynchronous collective three times: in the fusion that starts it, in the
    fusion that waits for it (`async-collective-done`) and in the compute fusions that consume
    its pieces as they arrive (`async_collective_fusion`); only the start is counted.
    """
    mod = hlo_loops.parse(hlo_text)
    times, _ = hlo_loops.loops(mod, unknown_trip)
    echoes = _async_echoes(mod)
    out: dict[str, dict[str, int]] = {}
    for name, lines in mod.comps.items():
        k = times.get(name, 1 if mod.entry is None else 0)
        if name in echoes:
            continue
        for line in lines:
            m = _OP.match(line)
            if not m or not k:
                continue
            kind = m.group(2)
            c = out.setdefault(kind, {"count": 0, "bytes": 0})
            c["count"] += k
            c["bytes"] += k * _shape_bytes(m.group(1), bool(m.group(3)))
    return out


def _async_echoes(mod: hlo_loops.Module) -> set[str]:
    """Computations whose collectives repeat one started elsewhere (libtpu's async fusions)."""
    callers: dict[str, list[str]] = {}
    for lines in mod.comps.values():
        for line in lines:
            m = _CALLER.match(line)
            if m:
                for callee in re.findall(r"\bcalls=%?([\w.\-]+)", line):
                    callers.setdefault(callee, []).append(m.group(1))
    return {
        name
        for name in mod.comps
        if name.startswith("async_collective_fusion")
        or (callers.get(name) and all(c.startswith("async-collective-done") for c in callers[name]))
    }


def _short(used: tuple[str, str], cap: tuple[str, str], what: str) -> str:
    """'the compiler needs U GiB per chip{what}, C GiB available (S GiB short)' from (number, unit)s."""
    u, c = (float(n) * _UNITS[unit] for n, unit in (used, cap))
    return (
        f"the compiler needs {u / GiB:.2f} GiB per chip{what}, {c / GiB:.2f} GiB available "
        f"({(u - c) / GiB:.2f} GiB short)"
    )


def oom_message(error: Exception) -> str | None:
    """The compiler's out-of-HBM line (used vs capacity), or None for other errors."""
    text = str(error)
    m = _USED.search(text)
    if m:
        return _short(m.group(1, 2), m.group(3, 4), "")
    m = _NEEDS.search(text)
    if m:
        return _short(m.group(2, 3), m.group(4, 5), f" for {m.group(1)}")
    if "RESOURCE_EXHAUSTED" in text or "Ran out of memory" in text:
        return next((s.strip() for s in text.splitlines() if "memory" in s), text[:200])
    return None


def compile_report(
    jitted: Any,
    args: Sequence[Any],
    mesh: Mesh,
    *,
    what: str = "step",
    topology: str = "",
    model_flops: float | None = None,
    rules: Any = None,
    unknown_trip: int | None = None,
) -> CompileReport:
    """Lowers `jitted` on abstract `args` (ShapeDtypeStructs with shardings) and compiles it.

    An out-of-memory refusal from the compiler becomes `report.error`; other errors raise.
    `rules`: flax logical axis rules active while tracing (the model's sharding constraints).
    `unknown_trip`: iterations of a loop whose HLO gives no trip count (a decode loop's bound).
    """
    import flax.linen as nn

    dev = mesh.devices.flat[0]
    report = CompileReport(
        what=what,
        topology=topology or getattr(dev, "platform", "?"),
        mesh=dict(mesh.shape),
        device_kind=getattr(dev, "device_kind", "?"),
        hbm_bytes=chip_hbm_bytes(dev, list(mesh.devices.flat)),
        model_flops=model_flops,
    )
    t0 = time.perf_counter()
    with jax.set_mesh(mesh), nn.logical_axis_rules(rules or ()):
        lowered = jitted.lower(*args)
        try:
            compiled = lowered.compile()
        except Exception as e:  # noqa: BLE001 - only the compiler's OOM becomes a report
            msg = oom_message(e)
            if msg is None:
                raise
            report.error, report.compile_s = msg, time.perf_counter() - t0
            return report
    report.compile_s = time.perf_counter() - t0
    mem = compiled.memory_analysis()
    if mem is not None:
        report.argument_bytes = int(mem.argument_size_in_bytes)
        report.output_bytes = int(mem.output_size_in_bytes)
        report.alias_bytes = int(mem.alias_size_in_bytes)
        report.temp_bytes = int(mem.temp_size_in_bytes)
    cost = compiled.cost_analysis()
    cost = cost[0] if isinstance(cost, list | tuple) and cost else cost
    text = report.hlo_text = compiled.as_text()
    if cost and "flops" in cost:
        # The compiler counts a loop body once; scanned layers run it once per layer.
        per_step, loops = hlo_loops.per_step_cost(text, cost, unknown_trip)
        report.compiler_flops = per_step["flops"]
        report.bytes_accessed = per_step["bytes accessed"]
        report.loop_trips = [lp.trip for lp in loops]
        report.assumed_trips = sum(lp.assumed for lp in loops)
    report.collectives = hlo_collectives(text, unknown_trip)
    return report
