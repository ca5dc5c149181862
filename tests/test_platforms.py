"""On a host without an accelerator JAX runs on CPU without probing for a TPU (libtpu installed)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

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
