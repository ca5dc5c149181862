"""Splitting examples across a pod's hosts and gathering their results back in order.

Host h of H reads shard h of the examples (SeqIO's ShardInfo: every H-th example, starting at
h) and decodes only those; `gather_shards` puts the per-host results back in the examples'
order on every process. (A source with at least H files, e.g. a large SeqIO cache, is sharded
by files instead: every row still comes back once, in an order of whole-file interleaving.)
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import jax
import numpy as np

from scicot_jax.runtime import partitioning as part


def shard_info(host: int, hosts: int, job: int = 0, jobs: int = 1) -> tuple[int, int]:
    """(index, count) of host `host`'s part of job shard `job` of `jobs` (t5x infer's shards).

    Job shard j holds examples j, j + jobs, ...; its host h keeps every `hosts`-th of those from
    its h-th, i.e. examples congruent to j + jobs * h modulo jobs * hosts.
    """
    return job + jobs * host, jobs * hosts


def local_limit(limit: int | None, host: int, hosts: int) -> int | None:
    """How many of host `host`'s examples fall among the first `limit` (every hosts-th one)."""
    return None if limit is None else max(0, -(-(limit - host) // hosts))


def allgather_objects(obj: Any) -> list[Any]:
    """Every process's JSON-able `obj`, indexed by process (a collective: all must call it)."""
    if jax.process_count() == 1:
        return [obj]
    from jax.experimental import multihost_utils

    part.sync_processes("allgather")  # hosts may arrive far apart (uneven host work)
    data = np.frombuffer(json.dumps(obj).encode(), np.uint8)
    sizes = np.asarray(multihost_utils.process_allgather(np.int64(len(data)))).reshape(-1)
    buf = np.zeros(int(sizes.max()), np.uint8)
    buf[: len(data)] = data
    blobs = np.asarray(multihost_utils.process_allgather(buf))
    return [json.loads(blobs[i, : sizes[i]].tobytes()) for i in range(len(sizes))]


def on_process_zero(fn: Callable[[], Any], what: str) -> None:
    """Runs `fn()` on process 0 only (e.g. writing a file in a shared directory); the others
    wait until it is done, and every process raises if it failed."""
    if jax.process_count() == 1:
        fn()
        return
    error = None
    if jax.process_index() == 0:
        try:
            fn()
        except Exception as e:  # noqa: BLE001 - re-raised below, after the others are released
            error = e
    failed = allgather_objects(error is not None)[0]  # also the barrier the others wait at
    if error is not None:
        raise error
    if failed:
        raise RuntimeError(f"process 0 failed: {what}")


def gather_shards(local: list[Any], host: int, hosts: int) -> list[Any]:
    """Host shards' results -> the whole list in example order, on every process.

    Item j of host h is example h + hosts * j (as `shard_info` splits them); hosts that share a
    shard (model parallelism across hosts) hold the same items, so one copy of each is kept.
    """
    if hosts == 1:
        return list(local)
    by_host = {h: items for h, items in allgather_objects([host, local])}
    return interleave([by_host[h] for h in range(hosts)])


def interleave(parts: list[list[Any]]) -> list[Any]:
    """Round-robin merge: part 0's first item, part 1's first, ..., part 0's second, ..."""
    longest = max(map(len, parts), default=0)
    return [p[j] for j in range(longest) for p in parts if j < len(p)]
