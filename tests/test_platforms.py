"""On a host without an accelerator JAX runs on CPU without probing for a TPU (libtpu installed)."""

from __future__ import annotations

import os
import resource
import subprocess
import sys
from pathlib import Path

import pytest

from scicot_jax import platforms

ROOT = Path(__file__).resolve().parents[1]


def test_cpu_only_when_no_accelerator_file(tmp_path):
    env: dict[str, str] = {}
    platforms.default_platforms(env, dev=str(tmp_path))
    assert env == {"JAX_PLATFORMS": "cpu"}
    for name in ("accel0", "nvidia0", "kfd"):
        (tmp_path / name).touch()
        env = {}
        platforms.default_platforms(env, dev=str(tmp_path))
        assert env == {}, name  # an accelerator host: JAX picks its platform itself
        (tmp_path / name).unlink()
    env = {"JAX_PLATFORMS": "tpu"}
    platforms.default_platforms(env, dev=str(tmp_path))
    assert env == {"JAX_PLATFORMS": "tpu"}  # the user's choice stands


def test_compiler_flags_keep_user_args():
    env = {"LIBTPU_INIT_ARGS": "--xla_tpu_foo=1"}
    platforms.set_compiler_flags(env)
    assert env["LIBTPU_INIT_ARGS"] == (
        f"--xla_tpu_foo=1 {platforms.COMPILER_STACK_FLAG}={platforms.COMPILER_STACK_BYTES} "
        f"{platforms.SHARDED_RNG_FLAG}=true"
    )
    user = f"{platforms.COMPILER_STACK_FLAG}=1048576 {platforms.SHARDED_RNG_FLAG}=false"
    env = {"LIBTPU_INIT_ARGS": user}
    platforms.set_compiler_flags(env)
    assert env["LIBTPU_INIT_ARGS"] == user


PROBE = """
import os, sys
import scicot_jax, jax
print("platform", jax.devices()[0].platform, os.environ.get("JAX_PLATFORMS"), flush=True)
print("-- topology --", file=sys.stderr, flush=True)
from scicot_jax.runtime import aot
print("topology", len(aot.topology_devices("v5e:2x2")), flush=True)
"""


def test_cpu_process_does_not_probe_for_a_tpu_but_still_compiles_for_one():
    """jax.devices() on CPU logs nothing about a TPU; the TPU topology still loads afterwards."""
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    env.pop("JAX_PLATFORMS", None)
    r = subprocess.run(
        [sys.executable, "-c", PROBE], env=env, capture_output=True, text=True, timeout=600
    )
    assert r.returncode == 0, r.stderr[-2000:]
    out = r.stdout.splitlines()
    if platforms.has_accelerator():  # JAX chooses the platform itself there
        assert out[0].endswith(" None"), out
        return
    assert out == ["platform cpu cpu", "topology 4"], out
    # Without the default, libtpu loads with jax.devices() and logs its failed TPU search.
    startup = r.stderr.split("-- topology --")[0]
    assert "TPU" not in startup and "libtpu" not in startup, startup[-2000:]


def test_keep_host_memory_only_in_a_cpu_process_and_never_over_the_users_malloc_settings():
    calls: list[tuple[int, int]] = []

    def mallopt(param: int, value: int) -> int:
        calls.append((param, value))
        return 1

    assert platforms.keep_host_memory({"JAX_PLATFORMS": "cpu"}, mallopt)
    assert calls == list(platforms.HOST_MALLOC.items())
    calls.clear()
    for env in (
        {},  # an accelerator host: JAX picks its platform, host memory is not the step's
        {"JAX_PLATFORMS": "tpu"},
        {"JAX_PLATFORMS": "cpu", "GLIBC_TUNABLES": "glibc.malloc.arena_max=4"},
    ):
        assert not platforms.keep_host_memory(env, mallopt), env
    assert calls == []
    # A refused setting is reported, and the others are still made.
    refuse = platforms.M_MMAP_THRESHOLD
    assert not platforms.keep_host_memory(
        {"JAX_PLATFORMS": "cpu"}, lambda p, v: calls.append((p, v)) or int(p != refuse)
    )
    assert calls == list(platforms.HOST_MALLOC.items())


FAULTS = """
import resource
from scicot_jax import platforms
platforms.keep_host_memory()  # as the binaries do, before jax starts
import jax, jax.numpy as jnp
step = jax.jit(lambda x, y: (x @ y) @ y.T)  # x @ y: a 128 MiB temporary
x, y = jnp.ones((8192, 64)), jnp.ones((64, 4096))
step = step.lower(x, y).compile()
assert step.memory_analysis().temp_size_in_bytes == 8192 * 4096 * 4
step(x, y).block_until_ready()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(40):
    step(x, y).block_until_ready()
print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


def test_cpu_steps_reuse_their_temporaries_instead_of_faulting_them_in_each_run():
    """40 runs of a program with 128 MiB of temporaries fault in a few blocks' pages, not 40."""
    if not platforms._libc_version().startswith("glibc"):
        pytest.skip("glibc's malloc only")

    def faults(**extra: str) -> float:
        """Page faults of the 40 runs after the first, in 128 MiB blocks."""
        env = dict(os.environ, PYTHONPATH=str(ROOT), JAX_PLATFORMS="cpu", **extra)
        r = subprocess.run(
            [sys.executable, "-c", FAULTS], env=env, capture_output=True, text=True, timeout=300
        )
        assert r.returncode == 0, r.stderr[-2000:]
        return int(r.stdout.split()[-1]) * resource.getpagesize() / (8192 * 4096 * 4)

    # The user's own malloc setting (arena_test=8 is glibc's default) turns ours off: then
    # glibc maps the block afresh each run and every page of it faults.
    if faults(GLIBC_TUNABLES="glibc.malloc.arena_test=8") < 30:
        pytest.skip("this XLA or glibc reuses the block itself")
    # Kept, a run whose temporaries are freed only after the next run's are taken grows the
    # heap by a block (the first faults of it); once grown, the blocks are reused. (1-6 blocks
    # measured, the most with two busy processes on this test's two cores.)
    assert faults() < 20


def test_the_binaries_that_run_steps_keep_host_memory_first(monkeypatch):
    """train / eval / infer (run_binary) and the pipeline set malloc before parsing anything."""
    from scicot_jax.pipeline import cli as pipeline_cli
    from scicot_jax.runtime import gin_utils

    calls = []
    monkeypatch.setattr(platforms, "keep_host_memory", lambda: calls.append(1))
    with pytest.raises(SystemExit):
        gin_utils.run_binary(["scicot-train", "--no_such_flag"], "train", run=lambda: None)
    with pytest.raises(SystemExit):
        pipeline_cli.main(["--no_such_flag"])
    assert calls == [1, 1]
