"""Metric writers (TensorBoard via tensorboardX + JSONL) and throughput/MFU accounting."""

from __future__ import annotations

import json
import logging
import re
import time
from typing import Any

import jax

from scicot_jax.paths import Mirror, PathLike, as_path, is_url

log = logging.getLogger(__name__)
_TB_UNSAFE = re.compile(r"[^\w./-]")  # TensorBoard tag charset

# Dense bf16 peak FLOP/s per device, by substrings of jax's device_kind.
PEAK_FLOPS = (
    ("H200", 989e12),
    ("H100", 989e12),
    ("A100", 312e12),
    ("L4", 121e12),
    ("A10", 125e12),
    ("TPU v6", 918e12),
    ("TPU v5p", 459e12),
    ("TPU v5", 197e12),
    ("TPU v4", 275e12),
    ("TPU v3", 123e12),
    ("TPU v2", 45e12),
)


def peak_flops_per_device(device: Any | None = None) -> float | None:
    """Vendor peak for the device, None when unknown (e.g. CPU)."""
    kind = (device or jax.devices()[0]).device_kind
    for key, value in PEAK_FLOPS:
        if key.lower() in kind.lower():
            return value
    return None


class Throughput:
    """Tokens/s, examples/s and MFU over the interval since the last `measure` call."""

    def __init__(
        self, flops_per_example: float | None, num_devices: int, peak_flops: float | None = None
    ):
        self.flops_per_example = flops_per_example
        self.peak = (peak_flops or peak_flops_per_device() or 0.0) * num_devices
        self._t, self._examples, self._tokens = time.perf_counter(), 0, 0

    def add(self, examples: int, tokens: int) -> None:
        self._examples += examples
        self._tokens += tokens

    def measure(self) -> dict[str, float]:
        now = time.perf_counter()
        dt = max(now - self._t, 1e-9)
        out = {"examples_per_s": self._examples / dt, "tokens_per_s": self._tokens / dt}
        if self.flops_per_example:
            out["tflops_per_s"] = out["examples_per_s"] * self.flops_per_example / 1e12
            if self.peak:
                out["mfu"] = out["examples_per_s"] * self.flops_per_example / self.peak
        self._t, self._examples, self._tokens = now, 0, 0
        return out


class MetricsWriter:
    """Writes scalars to TensorBoard (`<dir>/events*`) and `<dir>/metrics.jsonl`; host 0 only.

    A gs:// dir is written through a local mirror pushed after every write (GCS objects cannot
    be appended to, and one GCS client, gcsfs, then serves the whole run).
    """

    def __init__(self, log_dir: PathLike, enabled: bool | None = None):
        self.enabled = jax.process_index() == 0 if enabled is None else enabled
        self.dir = as_path(log_dir)
        self._tb = None
        self._mirror = None
        if self.enabled:
            local = self.dir
            if is_url(self.dir):
                import tempfile

                self._mirror = Mirror(self.dir, tempfile.mkdtemp(prefix="scicot_metrics_"))
                self._mirror.pull()
                local = as_path(self._mirror.local)
            local.mkdir(parents=True, exist_ok=True)
            from tensorboardX import SummaryWriter

            self._tb = SummaryWriter(str(local), flush_secs=30)
            self._jsonl = open(local / "metrics.jsonl", "a")  # noqa: SIM115 - closed in close()

    def write(self, step: int, scalars: dict[str, float]) -> None:
        if not self.enabled:
            return
        for k, v in scalars.items():
            self._tb.add_scalar(_TB_UNSAFE.sub("_", k), float(v), step)
        self._jsonl.write(
            json.dumps({"step": int(step), **{k: float(v) for k, v in scalars.items()}}) + "\n"
        )
        self._jsonl.flush()
        if self._mirror is not None:
            self.flush()

    def write_text(self, step: int, tag: str, text: str) -> None:
        if self.enabled:
            self._tb.add_text(tag, text, step)

    def flush(self) -> None:
        if self.enabled:
            self._tb.flush()
            if self._mirror is not None:
                self._mirror.sync()

    def close(self) -> None:
        if self.enabled:
            self._tb.close()
            self._jsonl.close()
            if self._mirror is not None:
                self._mirror.sync()
            self.enabled = False
