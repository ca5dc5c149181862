"""Process-wide JAX/libtpu defaults, set before jax loads (scicot_jax/__init__.py).

- JAX_PLATFORMS=cpu when unset on a host with no TPU or GPU device files: libtpu (installed for
  `--compile_only`) otherwise makes every JAX process probe for a TPU and log its failure. The
  compile-only path still reaches TPU topologies: `jax.experimental.topologies` loads libtpu
  on its own.
- A larger stack for libtpu's compiler threads: libtpu 0.0.42's convolution emitter overflows
  the default one (SIGSEGV "STACK OVERFLOW" in FusedSpatialMajorConvolution::MakeConvWindows)
  on the fusions of a rematerialized train step; 256 KiB is enough for T5, 8 MiB leaves room.
- Dropout bits generated per shard on TPU: by default the SPMD partitioner gives XLA's
  RngBitGenerator (the "rbg" dropout keys) the global shape on every chip and slices it, so
  every chip held the whole global batch's attention-dropout bits (u32 [B, heads, Q, K]): T5-small
  at 16 rows per chip needed 12.9 GiB of temporaries on v5e-64 and 27.8 GiB on v5e-256, 6.5 GiB
  on both with the flag (bench/fit_table.jsonl). With --xla_tpu_spmd_rng_bit_generator_unsafe
  each shard draws its own rows from the key mixed with its shard index (the chips that hold
  the same rows share it); masks then depend on the mesh. CPU and GPU programs are unchanged.
- XLA:CPU copy insertion by region analysis for the train step (`compiler_options`, per
  compile): without it the CPU compiler copies every donated parameter before the step updates
  it in place (96 copies on the CPU bench's T5, 2-3 % of its step, docs/step_speed.md).
- glibc's malloc set to reuse the CPU step's temporaries (`keep_host_memory`): not on import,
  but by the binaries that run steps, first thing (its docstring says why).
"""

from __future__ import annotations

import ctypes
import glob
import os
from collections.abc import Callable, MutableMapping

# Device files of the accelerators JAX drives: TPU v4/v5e (accel), v5p/v6e (vfio), NVIDIA, AMD.
ACCELERATOR_FILES = ("accel*", "vfio/[0-9]*", "nvidia[0-9]*", "kfd")
COMPILER_STACK_FLAG = "--xla_internal_thread_stack_size_bytes"
COMPILER_STACK_BYTES = 8 * 2**20
SHARDED_RNG_FLAG = "--xla_tpu_spmd_rng_bit_generator_unsafe"
# libtpu flags this package sets unless LIBTPU_INIT_ARGS names them already.
COMPILER_FLAGS = {COMPILER_STACK_FLAG: COMPILER_STACK_BYTES, SHARDED_RNG_FLAG: "true"}


# Per-compile XLA options by platform (jax's `.compile(compiler_options=...)`).
COMPILER_OPTIONS = {"cpu": {"xla_cpu_copy_insertion_use_region_analysis": True}}


def compiler_options(platform: str) -> dict[str, bool] | None:
    """XLA options for compiling the train step on `platform` ('cpu', 'tpu', 'gpu'), or None."""
    options = COMPILER_OPTIONS.get(platform)
    return dict(options) if options else None


# glibc's mallopt parameters (malloc.h) and the values `keep_host_memory` gives them.
M_TRIM_THRESHOLD, M_MMAP_THRESHOLD, M_ARENA_MAX = -1, -3, -8
HOST_MALLOC = {M_ARENA_MAX: 1, M_MMAP_THRESHOLD: 2**30, M_TRIM_THRESHOLD: 2**30}


def keep_host_memory(
    env: MutableMapping[str, str] | None = None, mallopt: Callable[[int, int], int] | None = None
) -> bool:
    """Makes glibc's malloc reuse large freed blocks in a CPU-only process; whether it did.

    XLA:CPU allocates a run's temporaries as one block (228 MB on the CPU bench's T5) from its
    worker thread; glibc serves it by a fresh mmap (above its 32 MB threshold, and from a
    thread's own arena always above 64 MB) and unmaps it on free, so every step page-faulted
    all of it: 55,642 faults, a sixth of a 1-thread step (docs/step_speed.md 2c). One arena and
    mmap / trim thresholds of 1 GiB serve it from the heap, reused. One arena slows tf.data's
    threads, so the binaries that run steps (train, eval, infer, the pipeline) call this, first
    thing: it must precede jax's CPU client. Only where JAX_PLATFORMS=cpu; any glibc.malloc
    setting in GLIBC_TUNABLES is the user's choice and turns it off.
    """
    env = os.environ if env is None else env
    if env.get("JAX_PLATFORMS") != "cpu" or "glibc.malloc." in env.get("GLIBC_TUNABLES", ""):
        return False
    if mallopt is None:
        if not _libc_version().startswith("glibc"):
            return False
        mallopt = ctypes.CDLL(None).mallopt
    done = [mallopt(param, value) for param, value in HOST_MALLOC.items()]
    return all(ok == 1 for ok in done)


def _libc_version() -> str:
    try:
        return os.confstr("CS_GNU_LIBC_VERSION") or ""
    except (ValueError, OSError):  # not a GNU libc
        return ""


def has_accelerator(dev: str = "/dev") -> bool:
    """Whether `dev` holds a TPU or GPU device file."""
    return any(glob.glob(os.path.join(dev, pattern)) for pattern in ACCELERATOR_FILES)


def default_platforms(env: MutableMapping[str, str] | None = None, dev: str = "/dev") -> None:
    """Sets JAX_PLATFORMS=cpu when it is unset and the host has no accelerator."""
    env = os.environ if env is None else env
    if "JAX_PLATFORMS" not in env and not has_accelerator(dev):
        env["JAX_PLATFORMS"] = "cpu"


def set_compiler_flags(env: MutableMapping[str, str] | None = None) -> None:
    """Adds COMPILER_FLAGS to LIBTPU_INIT_ARGS, each unless the user's args set it already.

    Read once, when libtpu loads (the first TPU backend or topology of the process).
    """
    env = os.environ if env is None else env
    args = env.get("LIBTPU_INIT_ARGS", "")
    for flag, value in COMPILER_FLAGS.items():
        if flag not in args:
            args = f"{args} {flag}={value}".strip()
    env["LIBTPU_INIT_ARGS"] = args


def defaults() -> None:
    """Both defaults, for this process and the processes it starts."""
    import importlib.util

    default_platforms()
    if importlib.util.find_spec("libtpu") is not None:  # other TPU runtimes may not know the flag
        set_compiler_flags()
