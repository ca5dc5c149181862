"""The limiter serves waiting requests first come, first served: a freed slot goes to the
longest waiter, not back to the worker that freed it, so early jobs do not finish last."""

from __future__ import annotations

import asyncio
import json
import random

from scicot_jax.data.store import RationaleStore
from scicot_jax.data.synthetic import generate
from scicot_jax.teacher import start_oracle_server
from scicot_jax.teacher.inputs import as_source
from scicot_jax.teacher.limiter import AdaptiveConcurrency
from scicot_jax.teacher.runner import RunConfig, TeacherRun


def test_slots_are_granted_in_arrival_order():
    """Twice as many workers as slots (as the runner has) pull jobs 0..299 in order."""

    async def go() -> list[int]:
        sem, jobs, started = AdaptiveConcurrency(4), iter(range(300)), []
        rng = random.Random(0)

        async def worker() -> None:
            for j in jobs:
                await sem.acquire()
                started.append(j)
                await asyncio.sleep(rng.random() * 0.002)
                await sem.release()

        await asyncio.gather(*(worker() for _ in range(8)))
        return started

    started = asyncio.run(go())
    assert started == sorted(started)


def test_limit_changes_keep_the_queue_order():
    async def go() -> list[int]:
        sem, order = AdaptiveConcurrency(2), []

        async def job(i: int) -> None:
            await sem.acquire()
            order.append(i)
            await asyncio.sleep(0.001)
            await sem.release()

        first = await sem.acquire()
        tasks = [asyncio.create_task(job(i)) for i in range(20)]
        await asyncio.sleep(0.01)
        sem.on_throttle(first)  # limit 2 -> 1 while 20 wait
        await sem.release()
        for _ in range(50):
            sem.on_success()  # grows back to 2
        await asyncio.gather(*tasks)
        assert sem.in_flight == 0
        return order

    assert asyncio.run(go()) == list(range(20))


def test_first_jobs_pulled_are_written_first(tmp_path):
    srv = start_oracle_server(latency_ms=(1, 6))
    try:
        exs = list(generate("arithmetic", "train", n=300))
        cfg = RunConfig(
            "openai", "oracle", prompt="answer_conditioned", base_url=srv.url,
            concurrency=4, progress=False,
        )  # fmt: skip
        run = TeacherRun(
            cfg, "synthetic_arithmetic", as_source(exs), tmp_path / "c", tmp_path / "r"
        )
        summary = asyncio.run(run.run())
    finally:
        srv.close()
    assert summary["written"] == 300
    order = {r.example_id: i for i, r in enumerate(RationaleStore.open(tmp_path / "r").records())}
    positions = [order[ex.id] for ex in exs]
    # The first 8 jobs pulled (one per worker) are among the first records written.
    assert max(positions[:8]) < 16, positions[:8]
    print(json.dumps({"positions_of_first_8": positions[:8]}))
