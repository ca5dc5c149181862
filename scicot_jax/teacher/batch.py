"""`--mode batch`: the run's uncached requests go to the provider's batch API, exactly once.

Passes over the jobs: records the cache answers are written; every other job contributes its
next request (zero-shot step 1, or step 2 built from a cached step 1), which is packed into
jobs of at most the provider's size limits. Passes repeat until nothing is left to send, so
zero-shot step 2 goes out as a second batch automatically.

Exactly-once across kill -9: a job's request keys are committed to the cache (batch_items,
phase 'built') before anything is uploaded; the phase moves built -> uploaded -> submitting ->
submitted -> collected, each step committed. A key in a job not yet collected is never put in
another job, nor is a request that an online run sharing the cache holds a live lease on
(checked again in the transaction that records the job); an online run in turn leaves alone the
requests of jobs not collected yet (see cache.Cache.lease). A crash between 'submitting' and 'submitted' (the provider may have the job, we
lack its id) is settled on resume by looking the job up by our input file / job name before
submitting again. Results are committed to the responses table together with the job's
'collected' phase, in one transaction, so a crash while downloading downloads again and a
crash after it loses nothing. Failed, expired or lost items go into a later job (up to
--batch-attempts), or online with --fallback online; successes are kept.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sqlite3
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from scicot_jax.data.examples import Example
from scicot_jax.data.store import RationaleStore
from scicot_jax.files import atomic_write
from scicot_jax.teacher.batch_clients import BatchClient, JobLost, make_batch_client
from scicot_jax.teacher.cache import Cache, select_in
from scicot_jax.teacher.config import RunConfig
from scicot_jax.teacher.pricing import Price, batch_price
from scicot_jax.teacher.progress import Progress, Stats
from scicot_jax.teacher.protocol import (
    FatalRequestError,
    GenRequest,
    GenResponse,
    TeacherError,
    estimate_tokens,
)

if TYPE_CHECKING:  # cached_pass reads the report, which reads this module's job table
    from scicot_jax.teacher.cached_pass import CacheReader

CRASH_ENV = "SCICOT_TEACHER_CRASH_AT"  # tests: SIGKILL the run at one of these points
CRASH_POINTS = ("built", "uploaded", "submitted", "polled", "downloaded", "collected", "records")
_FATAL_WEIGHT = 1000  # a 4xx item: as if every attempt were used


def crash_point(name: str) -> None:
    """kill -9 this process here when the test environment asks for it (no cleanup at all)."""
    if os.environ.get(CRASH_ENV) == name:
        os.kill(os.getpid(), signal.SIGKILL)


class BatchRun(Protocol):
    """What the batch driver reads and calls of the run it drives (runner.TeacherRun is one)."""

    cfg: RunConfig
    out_dir: Path
    price: Price
    reader: CacheReader  # answers from the cache, and the requests of a job
    invocation: str  # this invocation's id in the cache (its leases)
    stats: Stats
    progress: Progress

    def counters(self) -> tuple[str, dict[str, Any]]: ...  # committed with each result

    def jobs(self, count_skipped: bool = True) -> Iterator[tuple[Example, int]]: ...

    @property
    def stopping(self) -> bool: ...

    def stop(self, status: str, message: str) -> None: ...


class BatchDriver:
    """Builds, submits, polls and collects the batch jobs of one run."""

    def __init__(self, run: BatchRun, client: BatchClient, cache: Cache):
        self.run, self.client, self.cache = run, client, cache
        self.db = cache.db
        self.run_id = str(run.out_dir.resolve())
        self.dir = run.out_dir / "batches"
        self.price = batch_price(run.price)
        self.exhausted = 0
        self.started = time.time()
        # (status, message) once --max-cost / --max-requests forbid more jobs: the jobs in
        # flight are still waited for and collected, then the run stops.
        self.budget: tuple[str, str] | None = None
        # Requests to look at again: an online run sharing the cache is sending them, or has
        # just answered them (the next pass writes their records).
        self.recheck = 0

    # -- the loop ------------------------------------------------------------------------
    async def drive(self) -> None:
        """Resume jobs in flight, then pass / submit / wait until nothing is left to send."""
        first = True
        while not self.run.stopping:
            await self.wait()
            if self.run.stopping:
                return
            if self.budget is not None:  # what was paid for is in: now stop
                self.run.stop(*self.budget)
                return
            submitted, exhausted, busy = self.one_pass(count_skipped=first)
            first = False
            if submitted == 0 and not self._open() and self.budget is None and self.recheck:
                # online runs are sending the rest right now: their answers come in seconds
                await _sleep(self.run, min(1.0, self.run.cfg.batch_poll_s))
                continue
            if submitted == 0 and not self._open() and self.budget is None:
                # Keys still busy are in another run's jobs that it has not submitted yet: that
                # run sends them (re-run it if it died); here they count as failed.
                self.exhausted = exhausted + busy
                return

    def one_pass(self, count_skipped: bool) -> tuple[int, int, int]:
        """Write what the cache answers; pack every other job's next request into jobs.

        Returns (requests submitted, requests out of attempts, requests busy in open jobs)."""
        builder = _Builder(self)
        exhausted = waiting = self.recheck = 0
        for chunk in _chunks(self.run.jobs(count_skipped=count_skipped)):
            nexts = [
                r1req if r1 is None else r2req
                for r1req, r1, r2req, _ in self.run.reader.cached_responses(chunk)
            ]
            reqs = [r for r in nexts if r is not None]  # None: answered since jobs() looked
            self.recheck += len(nexts) - len(reqs)
            keys = [r.key for r in reqs]
            busy, tries = self._in_flight(keys), self._attempts(keys)
            leased = self.cache.leased_by_others(keys, self.run.invocation)
            for req in reqs:
                if req.key in busy:
                    waiting += 1
                    continue
                if req.key in leased:
                    self.recheck += 1
                    continue
                if tries.get(req.key, 0) >= self.run.cfg.batch_attempts:
                    exhausted += 1
                    continue
                builder.add(req)
                if self.run.stopping:
                    return builder.submitted, exhausted, waiting
        builder.flush()
        return builder.submitted, exhausted, waiting

    async def wait(self) -> None:
        """Advance every open job of this run until all are collected (or the run stops)."""
        while not self.run.stopping:
            jobs = self._open()
            if not jobs:
                return
            self._hold(jobs)
            for job in jobs:
                if self.run.stopping:
                    return
                self.advance(job)
            crash_point("polled")
            self.run.progress.maybe_render()
            if self._open():
                await _sleep(self.run, self.run.cfg.batch_poll_s)

    # -- one job -------------------------------------------------------------------------
    def submit_new(self, reqs: list[GenRequest], lines: list[bytes]) -> int | None:
        """Persist a new job (file + keys), then upload and submit it; returns the requests
        it took, None if over budget.

        The job takes only requests that are still free when it is recorded: not cached, in no
        other open job, under no live online lease (one write transaction decides)."""
        cfg = self.run.cfg
        local_id = f"scicot-{uuid.uuid4().hex[:16]}"
        path = self.dir / f"{local_id}.jsonl"
        with self.cache.transaction():
            keys = [r.key for r in reqs]
            taken = (
                self.cache.cached_keys(keys)
                | self._in_flight(keys)
                | self.cache.leased_by_others(keys, self.run.invocation)
            )
            if taken:
                self.recheck += len(taken)
                free = [i for i, r in enumerate(reqs) if r.key not in taken]
                reqs, lines = [reqs[i] for i in free], [lines[i] for i in free]
                if not reqs:
                    return 0
            est = sum(self.price.cost(estimate_tokens(r.prompt), r.max_tokens) for r in reqs)
            if cfg.max_cost is not None:
                spent, held = self._spend()
                if spent + held + est > cfg.max_cost:
                    self.budget = (
                        "max_cost",
                        f"stopped at ${spent:.4f} (+${held:.4f} in flight): a batch of "
                        f"{len(reqs)} requests could pass --max-cost ${cfg.max_cost:g}",
                    )
                    return None
            self.dir.mkdir(parents=True, exist_ok=True)
            atomic_write(path, b"".join(lines))
            now = time.time()
            self.db.execute(
                "INSERT INTO batch_jobs(id, run, provider, phase, input_path, requests, est_cost,"
                " created, updated, holder) VALUES (?, ?, ?, 'built', ?, ?, ?, ?, ?, ?)",
                (
                    local_id,
                    self.run_id,
                    self.client.provider,
                    str(path),
                    len(reqs),
                    est,
                    now,
                    now,
                    self.run.invocation,
                ),
            )
            self.db.executemany(
                "INSERT INTO batch_items(job, key, request) VALUES (?, ?, ?)",
                [(local_id, r.key, r.canonical()) for r in reqs],
            )
        crash_point("built")
        self.advance(self._job(local_id))
        return len(reqs)

    def advance(self, job: dict[str, Any]) -> None:
        """One step for each phase the job can leave now (upload, submit, poll, collect)."""
        try:
            self._advance(job)
        except JobLost as e:
            self._collect(job, "lost", [], str(e))
        except TeacherError as e:  # the provider is unwell: try again at the next poll
            self._update(job["id"], message=str(e)[:300])

    def _advance(self, job: dict[str, Any]) -> None:
        jid = job["id"]
        if job["phase"] == "built":
            fid = self.client.upload(Path(job["input_path"]), jid)
            self._update(jid, phase="uploaded", remote_file=fid)
            crash_point("uploaded")
            job = self._job(jid)
        if job["phase"] == "submitting":  # a crash hid whether the provider has it
            rid = self.client.find(jid, job["remote_file"])
            if rid is not None:
                self._submitted(jid, rid, job["requests"])
                job = self._job(jid)
            else:
                job["phase"] = "uploaded"
        if job["phase"] == "uploaded":
            self._update(jid, phase="submitting")
            rid = self.client.submit(jid, job["remote_file"], list(self._requests(jid).values()))
            crash_point("submitted")
            self._submitted(jid, rid, job["requests"])
            return  # just submitted: poll from the next round
        if job["phase"] == "submitted":
            st = self.client.status(job["remote_id"])
            if st.done:
                results = list(self.client.results(job["remote_id"], self._requests(jid)))
                crash_point("downloaded")
                self._collect(job, st.state, results, st.message)
                # the flag read again: `cancel` may have set it after this round read the job
                if (
                    st.state == "cancelled"
                    and (self._job(jid)["cancel_requested"] or 0) >= self.started
                ):
                    # `scicot-teacher cancel` while this run was going: stop spending
                    self.run.stop(
                        "cancelled",
                        f"batch job {jid} was cancelled; its finished items are kept, "
                        "re-run the same command to send the rest",
                    )
            elif st.state != job["state"]:
                self._update(jid, state=st.state)

    def _submitted(self, jid: str, rid: str, n: int) -> None:
        self._update(jid, phase="submitted", remote_id=rid, state="pending")
        self.run.stats.sent += n

    def _collect(
        self,
        job: dict[str, Any],
        state: str,
        results: list[tuple[str, GenResponse | TeacherError]],
        message: str,
    ) -> None:
        """Commit results, failures and the job's end in one transaction; then count them."""
        reqs = self._requests(job["id"])
        ok = [(reqs[k], r) for k, r in results if isinstance(r, GenResponse)]
        bad = [(reqs[k], e) for k, e in results if not isinstance(e, GenResponse)]
        answered = {k for k, _ in results}
        tok_in = sum(r.input_tokens for _, r in ok)
        tok_out = sum(r.output_tokens for _, r in ok)
        cost = self.price.cost(tok_in, tok_out)
        now = time.time()
        outcome = [("ok", k) for k, r in results if isinstance(r, GenResponse)]
        outcome += [
            ("fatal" if isinstance(e, FatalRequestError) else "failed", k)
            for k, e in results
            if not isinstance(e, GenResponse)
        ]
        outcome += [(state, k) for k in reqs if k not in answered]  # expired, cancelled, lost
        s = self.run.stats
        before = (s.ok, s.failures, s.input_tokens, s.output_tokens, s.cost_usd)
        s.ok += len(ok)
        s.failures += len(reqs) - len(ok)
        s.input_tokens += tok_in
        s.output_tokens += tok_out
        s.cost_usd += cost
        try:
            self._commit(job, state, ok, bad, outcome, (tok_in, tok_out, cost), message, now)
        except _Collected:  # another run sharing the cache collected it first
            s.ok, s.failures, s.input_tokens, s.output_tokens, s.cost_usd = before
            return
        crash_point("collected")

    def _commit(
        self,
        job: dict[str, Any],
        state: str,
        ok: list[tuple[GenRequest, GenResponse]],
        bad: list[tuple[GenRequest, Any]],
        outcome: list[tuple[str, str]],
        spend: tuple[int, int, float],
        message: str,
        now: float,
    ) -> None:
        """One transaction: the job's end (only if not collected yet), results, failures."""
        tok_in, tok_out, cost = spend
        with self.cache.transaction():
            won = self.db.execute(
                "UPDATE batch_jobs SET phase='collected', state=?, succeeded=?, failed=?,"
                " input_tokens=?, output_tokens=?, cost=?, message=?, updated=?"
                " WHERE id=? AND phase!='collected'",
                (
                    state,
                    len(ok),
                    job["requests"] - len(ok),
                    tok_in,
                    tok_out,
                    cost,
                    message[:300],
                    now,
                    job["id"],
                ),
            ).rowcount
            if not won:
                raise _Collected
            self.cache._save_stats(self.run.counters, now)  # the counters commit with the results
            self.cache.insert_responses([(q.key, q.canonical(), r.to_json(), now) for q, r in ok])
            self.db.executemany(
                "INSERT INTO failures(key, request, error, status, message, created)"
                " VALUES (?, ?, ?, ?, ?, ?)",
                [
                    (q.key, q.canonical(), type(e).__name__, e.status, str(e)[:1000], now)
                    for q, e in bad
                ],
            )
            self.db.executemany(
                "UPDATE batch_items SET outcome=? WHERE job=? AND key=?",
                [(o, job["id"], k) for o, k in outcome],
            )

    # -- bookkeeping ---------------------------------------------------------------------
    def _job(self, jid: str) -> dict[str, Any]:
        cur = self.db.execute("SELECT * FROM batch_jobs WHERE id=?", (jid,))
        return dict(zip([c[0] for c in cur.description], cur.fetchone(), strict=True))

    def _open(self) -> list[dict[str, Any]]:
        """This run's unfinished jobs, and any run's submitted ones (polling them is safe: a
        job is collected once, see _collect), so runs sharing a cache finish each other's."""
        cur = self.db.execute(
            "SELECT * FROM batch_jobs WHERE (run=? AND phase!='collected') OR phase='submitted'"
            " ORDER BY created",
            (self.run_id,),
        )
        names = [c[0] for c in cur.description]
        return [dict(zip(names, row, strict=True)) for row in cur.fetchall()]

    def _hold(self, jobs: list[dict[str, Any]]) -> None:
        """Mark this run as the one polling `jobs`: online runs wait for them while it lives."""
        mine = self.run.invocation
        if any(j["holder"] != mine for j in jobs):
            with self.cache.transaction():
                self.db.executemany(
                    "UPDATE batch_jobs SET holder=? WHERE id=?", [(mine, j["id"]) for j in jobs]
                )

    def _update(self, jid: str, **kv: Any) -> None:
        sets = ", ".join(f"{k}=?" for k in kv)
        with self.cache.transaction():
            self.db.execute(
                f"UPDATE batch_jobs SET {sets}, updated=? WHERE id=?",
                (*kv.values(), time.time(), jid),
            )

    def _requests(self, jid: str) -> dict[str, GenRequest]:
        rows = self.db.execute("SELECT key, request FROM batch_items WHERE job=?", (jid,))
        return {k: GenRequest.from_canonical(r) for k, r in rows}

    def _in_flight(self, keys: list[str]) -> set[str]:
        """Those of `keys` carried by a job of any run that is not collected yet."""
        return {
            k
            for (k,) in select_in(
                self.db,
                "SELECT i.key FROM batch_items i JOIN batch_jobs j ON i.job=j.id"
                " WHERE j.phase!='collected' AND i.key IN ({})",
                keys,
            )
        }

    def _attempts(self, keys: list[str]) -> dict[str, int]:
        """Failed batch attempts per key (a 4xx counts as all of them)."""
        w = _FATAL_WEIGHT
        q = (
            f"SELECT key, SUM(CASE outcome WHEN 'fatal' THEN {w} ELSE 1 END) FROM batch_items"
            " WHERE outcome IS NOT NULL AND outcome!='ok' AND key IN ({}) GROUP BY key"
        )
        return dict(select_in(self.db, q, keys))

    def _spend(self) -> tuple[float, float]:
        """(USD billed by collected jobs, USD held by open ones) of this run."""
        spent, held = self.db.execute(
            "SELECT COALESCE(SUM(cost), 0), COALESCE(SUM(CASE WHEN phase!='collected'"
            " THEN est_cost ELSE 0 END), 0) FROM batch_jobs WHERE run=?",
            (self.run_id,),
        ).fetchone()
        return float(spent), float(held)


class _Collected(Exception):
    """The job was collected by someone else in the meantime."""


class _Builder:
    """Packs requests into jobs within the provider's limits (requests and bytes)."""

    def __init__(self, driver: BatchDriver):
        self.driver = driver
        c, cfg = driver.client, driver.run.cfg
        self.max_requests = min(c.max_requests, cfg.batch_max_requests or c.max_requests)
        self.max_bytes = c.max_bytes
        self.reqs: list[GenRequest] = []
        self.lines: list[bytes] = []
        self.size = self.submitted = 0
        self.base_sent = driver.run.stats.sent  # sent before this pass (earlier passes, resumed)

    def add(self, req: GenRequest) -> None:
        if self.driver.budget is not None:
            return
        run = self.driver.run
        limit = run.cfg.max_requests
        if limit is not None and self.base_sent + self.submitted + len(self.reqs) >= limit:
            self.flush()
            self.driver.budget = (
                "max_requests",
                f"stopped after {limit} requests (--max-requests)",
            )
            return
        line = self.driver.client.line(req)
        if self.reqs and (
            len(self.reqs) >= self.max_requests or self.size + len(line) > self.max_bytes
        ):
            self.flush()
        self.reqs.append(req)
        self.lines.append(line)
        self.size += len(line)

    def flush(self) -> None:
        if self.reqs and not self.driver.run.stopping and self.driver.budget is None:
            self.submitted += self.driver.submit_new(self.reqs, self.lines) or 0
        self.reqs, self.lines, self.size = [], [], 0


def _chunks(jobs: Iterator[Any], n: int = 512) -> Iterator[list[Any]]:
    chunk = []
    for j in jobs:
        chunk.append(j)
        if len(chunk) == n:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


async def _sleep(run: BatchRun, seconds: float) -> None:
    """Sleep in short steps so Ctrl-C stops a long poll interval at once."""
    end = time.monotonic() + seconds
    while not run.stopping and time.monotonic() < end:
        await asyncio.sleep(min(0.05, max(0.0, end - time.monotonic())))


def job_table(cache_path: Any, run_dir: Any) -> list[dict[str, Any]]:
    """The batch jobs of a run, oldest first (for `report`); [] if there are none."""
    if not Path(cache_path).exists():
        return []
    with Cache(cache_path, readonly=True) as cache:
        try:
            cur = cache.db.execute(
                "SELECT id, remote_id, phase, state, requests, succeeded, failed, est_cost, cost,"
                " message FROM batch_jobs WHERE run=? ORDER BY created",
                (str(Path(run_dir).resolve()),),
            )
        except sqlite3.OperationalError:  # a cache from before batch mode: no such table
            return []
        names = [c[0] for c in cur.description]
        return [dict(zip(names, row, strict=True)) for row in cur.fetchall()]


def cancel_run(run_dir: Any) -> list[dict[str, Any]]:
    """`cancel RUN_DIR`: cancel the run's submitted jobs; unsent ones are dropped."""

    manifest = RationaleStore.read_manifest(run_dir)
    teacher = manifest.get("teacher") or {}
    provider = str(teacher.get("provider", "openai-chat"))
    client = make_batch_client(
        str(teacher.get("backend")),
        base_url=teacher.get("base_url"),
        api="completions" if provider.endswith("completions") else "chat",
    )
    out = []
    run_id = str(Path(run_dir).resolve())
    with Cache(manifest["cache"]) as cache:
        rows = cache.db.execute(
            "SELECT id, phase, remote_file, remote_id FROM batch_jobs WHERE run=? AND"
            " phase!='collected'",
            (run_id,),
        ).fetchall()
        for jid, phase, remote_file, remote_id in rows:
            if phase == "submitting":
                remote_id = client.find(jid, remote_file)
            if remote_id:
                # flagged before the provider is asked: a run that sees the job cancelled then
                # always finds the flag, and stops instead of sending the items again
                with cache.transaction():
                    cache.db.execute(
                        "UPDATE batch_jobs SET cancel_requested=? WHERE id=?", (time.time(), jid)
                    )
                client.cancel(remote_id)
                out.append({"id": jid, "remote_id": remote_id, "action": "cancel requested"})
                if phase == "submitting":
                    with cache.transaction():
                        cache.db.execute(
                            "UPDATE batch_jobs SET phase='submitted', remote_id=?, state='pending'"
                            " WHERE id=?",
                            (remote_id, jid),
                        )
                continue
            with cache.transaction():  # never submitted: nothing to cancel remotely
                cache.db.execute(
                    "UPDATE batch_jobs SET phase='collected', state='cancelled' WHERE id=?",
                    (jid,),
                )
                cache.db.execute("UPDATE batch_items SET outcome='cancelled' WHERE job=?", (jid,))
            out.append({"id": jid, "remote_id": None, "action": "dropped before submission"})
    client.close()
    return out
