"""Device mesh, the logical-axis rules table, and shardings for params, state and batches."""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from typing import Any

import flax.linen as nn
import jax
import numpy as np
from jax.experimental import mesh_utils
from jax.sharding import AxisType, Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

log = logging.getLogger(__name__)

DATA_AXIS = "data"
MODEL_AXIS = "model"


def standard_logical_axis_rules(
    activation_partitioning_dims: int = 1, parameter_partitioning_dims: int = 1
) -> tuple[tuple[str, str | None], ...]:
    """t5x's standard_logical_axis_rules: logical axis names (model annotations) -> mesh axes.

    Weights shard over "model" on their wide dimension and batches over "data".
    parameter_partitioning_dims=2 also shards every weight's "embed" dimension over "data"
    (FSDP / ZeRO-3: weights, gradients and optimizer state split over data-parallel chips;
    activations keep "batch" on "data", since an axis maps to one mesh axis at most once).
    activation_partitioning_dims=2 shards activations' "embed" over "model" as well.
    """
    if activation_partitioning_dims not in (1, 2) or parameter_partitioning_dims not in (1, 2):
        raise ValueError(
            f"activation_partitioning_dims={activation_partitioning_dims}, "
            f"parameter_partitioning_dims={parameter_partitioning_dims}: each must be 1 or 2"
        )
    embed: list[tuple[str, str | None]] = []
    if activation_partitioning_dims == 2:
        embed.append(("embed", MODEL_AXIS))
    if parameter_partitioning_dims == 2:
        embed.append(("embed", DATA_AXIS))
    return (
        ("batch", DATA_AXIS),
        ("vocab", MODEL_AXIS),
        ("mlp", MODEL_AXIS),
        ("heads", MODEL_AXIS),
        ("joined_kv", MODEL_AXIS),
        ("kv", None),
        *(embed or [("embed", None)]),
        ("relpos_buckets", None),
        ("layers", None),
        ("length", None),
        ("mlp_activations", MODEL_AXIS),
        ("activation_batch", DATA_AXIS),
        ("activation_length", None),
        ("activation_embed", None),
    )


# The default table (t5x's defaults: 1-D activation and parameter partitioning).
LOGICAL_AXIS_RULES = standard_logical_axis_rules()


def maybe_initialize_distributed() -> bool:
    """Calls jax.distributed.initialize() when a multi-host environment is detected."""
    markers = (
        "JAX_COORDINATOR_ADDRESS",
        "COORDINATOR_ADDRESS",
        "TPU_WORKER_HOSTNAMES",
        "SLURM_NTASKS",
        "OMPI_COMM_WORLD_SIZE",
    )
    multi = any(os.environ.get(k) for k in markers)
    if os.environ.get("SLURM_NTASKS") == "1" or os.environ.get("OMPI_COMM_WORLD_SIZE") == "1":
        multi = False
    hosts = os.environ.get("TPU_WORKER_HOSTNAMES", "")
    if hosts and "," not in hosts:
        multi = False
    if not multi:
        return False
    try:
        jax.distributed.initialize()
    except RuntimeError as e:  # already initialized by the caller
        if "already" not in str(e).lower():
            raise
    _keep_python_sigterm()
    log.info("jax.distributed: process %d of %d", jax.process_index(), jax.process_count())
    return True


def initialize_distributed(
    coordinator_address: str | None,
    process_count: int | None,
    process_index: int | None,
    timeout_s: int | None = None,
) -> None:
    """jax.distributed.initialize with t5x's --coordinator_address/--process_count/--process_index.

    On CPU the cross-process collectives need an implementation: gloo (it only affects the CPU
    client, so GPU/TPU hosts are unchanged).
    """
    from jax._src import distributed

    if distributed.global_state.client is not None:  # a second binary in the same process
        return
    if (process_count or 1) > 1:
        jax.config.update("jax_cpu_collectives_implementation", "gloo")
    kwargs = {"initialization_timeout": timeout_s} if timeout_s else {}
    log.info(
        "jax.distributed: coordinator %s, process %s of %s",
        coordinator_address,
        process_index,
        process_count,
    )
    jax.distributed.initialize(coordinator_address, process_count, process_index, **kwargs)
    _keep_python_sigterm()


def _keep_python_sigterm() -> None:
    """After jax.distributed.initialize: its preemption notifier takes SIGTERM's C handler, so
    Python's is put back (the run's own handler and runtime.deadlines' bound on the life after
    SIGTERM still work), and runtime.deadlines learns the pod is connected."""
    import signal
    import threading

    from scicot_jax.runtime import deadlines

    handler = signal.getsignal(signal.SIGTERM)
    if callable(handler) and threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, handler)
    deadlines.pod_started()  # connected: its processes may now tell each other they stop


def broadcast_time_seed() -> int:
    """A seed from process 0's clock, shared by all processes."""
    import time

    from jax.experimental import multihost_utils

    seed = np.int32(time.time_ns() % (2**31 - 1))
    return int(multihost_utils.broadcast_one_to_all(seed))


_SYNCS = iter(range(1 << 62))  # barrier names must be unique per process


def sync_processes(what: str) -> None:
    """Waits until every process gets here (a coordination-service barrier, not a collective).

    Called before collectives that follow uneven host work (compiles, checkpoint loads): gloo
    gives up on peers that are more than its connect timeout late, a barrier waits for them.
    """
    if jax.process_count() == 1:
        return
    from orbax.checkpoint import multihost

    multihost.sync_global_processes(f"scicot:{what}:{next(_SYNCS)}", timeout=3600)


def data_layout(sharding: NamedSharding, rows: int) -> tuple[int, int]:
    """(shard id, number of shards) of this process's rows of a `rows`-row global batch.

    As t5x's data layout: processes whose devices hold the same rows (model parallelism across
    hosts) form one shard and must feed the same data; a host feeds rows // num_shards rows.
    """
    by_process: dict[int, set[int]] = {}
    for d, idx in sharding.devices_indices_map((rows,)).items():
        by_process.setdefault(d.process_index, set()).update(range(*idx[0].indices(rows)))
    blocks = sorted({min(r) for r in by_process.values()})
    return blocks.index(min(by_process[jax.process_index()])), len(blocks)


def host_shard(mesh: Mesh) -> tuple[int, int]:
    """(shard id, number of shards) of this process's examples for batches over `mesh`."""
    return data_layout(batch_sharding(mesh), mesh.shape[DATA_AXIS])


def to_global(batch: dict[str, np.ndarray], sharding: NamedSharding) -> dict[str, jax.Array]:
    """This process's rows of every feature -> global jax.Arrays (inverse: `process_rows`).

    On a pod every host feeds and computes just its own rows of the global batch.
    """
    out = {}
    for k, x in batch.items():
        x = np.asarray(x)
        shards = data_layout(sharding, x.shape[0] * jax.process_count())[1]
        out[k] = jax.make_array_from_process_local_data(
            sharding, x, (x.shape[0] * shards,) + x.shape[1:]
        )
    return out


def process_rows(arrays: Any, sharding: NamedSharding) -> Any:
    """Global jax.Arrays whose rows follow an input fed with `to_global(.., sharding)` -> numpy
    of this process's rows (no cross-host traffic unless the output sits elsewhere)."""
    if jax.process_count() == 1:
        return jax.device_get(arrays)

    def one(x: jax.Array) -> np.ndarray:
        mine = sorted(
            {
                r
                for idx in sharding.addressable_devices_indices_map(x.shape[:1]).values()
                for r in range(*idx[0].indices(x.shape[0]))
            }
        )
        out, seen = np.empty(x.shape, x.dtype), np.zeros(x.shape, bool)
        for s in x.addressable_shards:
            out[s.index], seen[s.index] = np.asarray(s.data), True
        if seen[mine].all():
            return out[mine]
        from jax.experimental import multihost_utils  # rows live on other hosts: gather

        return np.asarray(multihost_utils.process_allgather(x, tiled=True))[mine]

    return jax.tree.map(one, arrays)


def make_mesh(
    model_parallel: int = 1, data_parallel: int = -1, devices: Sequence[Any] | None = None
) -> Mesh:
    """A (data, model) mesh; data_parallel=-1 takes all devices left over after model_parallel."""
    devices = list(jax.devices() if devices is None else devices)
    n = len(devices)
    if model_parallel < 1 or n % model_parallel:
        raise ValueError(f"model_parallel={model_parallel} does not divide {n} devices")
    if data_parallel == -1:
        data_parallel = n // model_parallel
    if data_parallel * model_parallel != n:
        raise ValueError(f"mesh {data_parallel}x{model_parallel} != {n} devices")
    shape = (data_parallel, model_parallel)
    try:  # topology-aware device order on TPU/GPU; plain order on CPU
        arr = mesh_utils.create_device_mesh(shape, devices)
    except (ValueError, NotImplementedError, AssertionError):  # odd/fake device sets
        arr = np.asarray(devices).reshape(shape)
    return Mesh(arr, (DATA_AXIS, MODEL_AXIS), axis_types=(AxisType.Auto, AxisType.Auto))


def logical_to_sharding(
    logical_tree: Any, mesh: Mesh, rules: Sequence[tuple[str, str | None]] = LOGICAL_AXIS_RULES
) -> Any:
    """Maps a pytree of logical PartitionSpecs/tuples to NamedShardings on the mesh."""

    def one(spec: Any) -> NamedSharding:
        spec = P(*spec) if isinstance(spec, tuple | list) else (spec if spec is not None else P())
        return nn.logical_to_mesh_sharding(spec, mesh, rules)

    return jax.tree.map(one, logical_tree, is_leaf=_is_spec)


def _is_spec(x: Any) -> bool:
    return (
        x is None
        or isinstance(x, P)
        or (isinstance(x, tuple) and all(isinstance(a, str | type(None)) for a in x))
    )


def fit_sharding(sharding: NamedSharding, shape: Sequence[int]) -> NamedSharding:
    """Drops mesh axes from dims they do not divide (e.g. tiny test models), so jit accepts it."""
    spec = list(sharding.spec) + [None] * (len(shape) - len(sharding.spec))
    new = []
    for dim, axes in zip(shape, spec[: len(shape)]):
        names = (axes,) if isinstance(axes, str) else tuple(axes or ())
        size = int(np.prod([sharding.mesh.shape[a] for a in names])) if names else 1
        new.append(axes if dim % size == 0 else None)
    return NamedSharding(sharding.mesh, P(*new))


def replicated(mesh: Mesh) -> NamedSharding:
    """Fully replicated sharding."""
    return NamedSharding(mesh, P())


def batch_sharding(mesh: Mesh) -> NamedSharding:
    """Leading (batch) dim over the data axis."""
    return NamedSharding(mesh, P(DATA_AXIS))


def params_shardings(
    logical_axes: Any,
    abstract_params: Any,
    mesh: Mesh,
    rules: Sequence[tuple[str, str | None]] = LOGICAL_AXIS_RULES,
) -> Any:
    """NamedShardings for params from the model's logical axes, fitted to each param's shape.

    Vectors (norm scales) stay off "data" under parameter_partitioning_dims=2: splitting a few
    KiB saves nothing, and their optimizer statistics (Adafactor's update RMS) would then be
    summed in another order than on one device.
    """
    shardings = logical_to_sharding(logical_axes, mesh, rules)

    def one(s: NamedSharding, a: Any) -> NamedSharding:
        s = fit_sharding(s, a.shape)
        if len(a.shape) < 2 and DATA_AXIS in jax.tree.leaves(tuple(s.spec)):
            s = NamedSharding(mesh, P(*(None if x == DATA_AXIS else x for x in s.spec)))
        return s

    return jax.tree.map(one, shardings, abstract_params)


def opt_state_shardings(
    optimizer: Any, abstract_opt_state: Any, abstract_params: Any, param_shardings: Any, mesh: Mesh
) -> Any:
    """Param-shaped optimizer slots (Adam moments) follow their param; the rest is replicated.

    Adafactor's factored row/column statistics are vectors, so replicating them is cheap.
    """
    import optax  # local: partitioning stays importable without the optimizer stack

    rep = replicated(mesh)

    def by_param(leaf: Any, param: Any, s: NamedSharding) -> NamedSharding:
        return s if tuple(leaf.shape) == tuple(param.shape) else rep

    return optax.tree_map_params(
        optimizer,
        by_param,
        abstract_opt_state,
        abstract_params,
        param_shardings,
        transform_non_params=lambda _: rep,
    )
