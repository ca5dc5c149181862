"""`report RUN_DIR`: requests, cache hits, tokens, cost, teacher accuracy, kept samples."""

from __future__ import annotations

import os
import time
from array import array
from collections import Counter
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np

from scicot_jax.data.store import RationaleRecord, RationaleStore
from scicot_jax.files import try_lock
from scicot_jax.teacher.batch import job_table
from scicot_jax.teacher.cache import Cache, CacheError
from scicot_jax.teacher.inputs import id_hash
from scicot_jax.teacher.pricing import price_for

RUN_LOCK = ".teacher.lock"  # held by the teacher run writing a run directory

_COUNTERS = (
    "sent",
    "ok",
    "cache_hits",
    "throttled",
    "retries",
    "failures",
    "jobs_failed",
    "written",
    "truncated",
    "input_tokens",
    "output_tokens",
)


_MASK = (1 << 64) - 1


def _kept_per_question(marks: array, chunk: int = 1 << 16) -> tuple[int, Counter[int]]:
    """(questions with a record, histogram of correct records per such question).

    Sorts `marks` in place, then walks it in 64k-entry chunks so the temporaries stay a few MB."""
    view = np.frombuffer(marks, dtype=np.uint64) if marks else np.zeros(0, np.uint64)
    view.sort()
    hist: Counter[int] = Counter()
    groups, cur, kept = 0, None, 0  # the question being counted across chunk edges
    one = np.uint64(1)
    for lo in range(0, len(view), chunk):
        part = view[lo : lo + chunk]
        ids, ok = part >> one, (part & one).astype(np.int64)
        new = np.empty(len(part), bool)
        new[0] = cur is None or ids[0] != cur
        np.not_equal(ids[1:], ids[:-1], out=new[1:])
        starts = np.flatnonzero(new)
        if not len(starts):
            kept += int(ok.sum())
            continue
        kept += int(ok[: starts[0]].sum())
        if cur is not None:
            hist[kept] += 1  # the carried question ends here
        sums = np.add.reduceat(ok, starts)
        for k, v in enumerate(np.bincount(sums[:-1])):
            if v:
                hist[k] += int(v)
        groups += len(starts)
        cur, kept = ids[-1], int(sums[-1])
    if cur is not None:
        hist[kept] += 1
    del view
    return groups, hist


class Tally:
    """accuracy_summary's counts, record by record. With `spill` (a file) the per-record marks
    (8 B each) wait on disk, so a run adds them as it writes while its key index holds the
    memory, and reads them back once the index is released (one pass fewer over the store)."""

    def __init__(self, spill: Path | None = None):
        self.n = self.correct = self.unparsed = self.truncated = self.tok_in = self.tok_out = 0
        # One 8-byte entry per record (not a Counter of ids): (id hash << 1) | correct.
        self.marks = array("Q")
        self.spill = spill
        if spill is not None:
            spill.write_bytes(b"")

    def add(self, records: Iterable[RationaleRecord]) -> None:
        marks = self.marks
        for rec in records:
            ok = rec.correct is True
            self.n += 1
            marks.append(((id_hash(rec.example_id) << 1) & _MASK) | ok)
            self.correct += ok
            self.unparsed += rec.answer is None
            self.truncated += bool(rec.extra.get("truncated"))
            self.tok_in += rec.input_tokens
            self.tok_out += rec.output_tokens
        self._spill_if_full()

    def merge(self, other: Tally) -> None:
        """Add the counts of `other` (a worker process's, for records written here)."""
        self.n += other.n
        self.correct += other.correct
        self.unparsed += other.unparsed
        self.truncated += other.truncated
        self.tok_in += other.tok_in
        self.tok_out += other.tok_out
        self.marks.extend(other.marks)
        self._spill_if_full()

    def _spill_if_full(self) -> None:
        if self.spill is not None and len(self.marks) >= _SPILL_AT:
            self._flush()

    def _flush(self) -> None:
        with open(self.spill, "ab") as f:
            self.marks.tofile(f)
        del self.marks[:]

    def _all_marks(self) -> array:
        if self.spill is None:
            return self.marks
        self._flush()
        marks = array("Q")
        with open(self.spill, "rb") as f:
            while True:  # in pieces: one read of the whole file would double the peak
                try:
                    marks.fromfile(f, _SPILL_AT)
                except EOFError:
                    break
        self.spill.unlink()
        return marks

    def summary(self, manifest: dict[str, Any]) -> dict[str, Any]:
        """Teacher accuracy over all samples and kept (correct) samples per question."""
        n, correct = self.n, self.correct
        marks = self._all_marks()
        with_records, hist = _kept_per_question(marks)
        del marks
        self.marks = array("Q")
        questions = int((manifest.get("examples") or {}).get("count", with_records))
        if questions > with_records:
            hist[0] += questions - with_records  # questions without any record yet
        return {
            "records": n,
            "questions": questions,
            "teacher_accuracy": round(100 * correct / n, 2) if n else None,
            "correct": correct,
            "unparseable_answers": self.unparsed,
            "truncated": self.truncated,
            "kept_samples_per_question": {
                "mean": round(correct / questions, 3) if questions else None,
                "questions_with_none": hist[0],
                "histogram": {str(k): hist[k] for k in sorted(hist)},
            },
            "record_tokens": {"input": self.tok_in, "output": self.tok_out},
        }


_SPILL_AT = 1 << 16  # marks kept in memory before they go to the spill file (512 KB)


def accuracy_summary(store: RationaleStore) -> dict[str, Any]:
    """Teacher accuracy over all samples and kept (correct) samples per question."""
    tally = Tally()
    tally.add(store.records())
    return tally.summary(store.manifest)


def mark_interrupted(inv: dict[str, Any], cache: Cache | None) -> dict[str, Any]:
    """An invocation still `running` in the manifest of a run nobody is writing was killed:
    it becomes `interrupted`, with the counters it last saved in the cache."""
    if inv.get("status") != "running":
        return inv
    saved = cache.invocation_stats(inv["id"]) if cache is not None and inv.get("id") else None
    return dict(
        inv,
        status="interrupted",
        message="killed (found still running); counters as last saved with its responses",
        stats=saved or inv.get("stats") or {},
    )


def run_is_live(out_dir: Path) -> bool:
    """True while a teacher run holds the run directory's lock."""
    try:
        fd = try_lock(Path(out_dir) / RUN_LOCK)
    except OSError:  # no run dir lock file can be made (read-only): assume nobody writes
        return False
    if fd is None:
        return True
    os.close(fd)
    return False


def _invocations(run_dir: Path, manifest: dict[str, Any]) -> list[dict[str, Any]]:
    """The manifest's invocations; one still `running` with nobody writing the run was
    killed: it is shown `interrupted` with the counters it saved in the cache as it ran."""
    invocations = manifest.get("invocations") or []
    if not any(inv.get("status") == "running" for inv in invocations) or run_is_live(run_dir):
        return invocations
    try:
        cache = Cache(manifest.get("cache", ""), readonly=True)
    except (OSError, CacheError):
        cache = None
    try:
        return [mark_interrupted(inv, cache) for inv in invocations]
    finally:
        if cache is not None:
            cache.close()


def _batch_jobs(cache: str | None, run_dir: str | os.PathLike[str]) -> dict[str, Any]:
    """Per-job state and spend of the run's batch jobs (from the cache)."""
    jobs = job_table(cache, run_dir) if cache else []
    return {
        "count": len(jobs),
        "in_flight": sum(j["phase"] != "collected" for j in jobs),
        "spent_usd": round(sum(j["cost"] for j in jobs), 6),
        "jobs": [
            {
                "id": j["id"],
                "remote_id": j["remote_id"],
                "state": j["state"] or j["phase"],
                "requests": j["requests"],
                "succeeded": j["succeeded"],
                "failed": j["failed"],
                "cost_usd": round(j["cost"], 6),
                "est_cost_usd_upper": round(j["est_cost"], 6),
                **({"message": j["message"]} if j["message"] else {}),
            }
            for j in jobs
        ],
    }


def report(run_dir: str | os.PathLike[str]) -> dict[str, Any]:
    """The JSON printed by `report`."""
    store = RationaleStore.open(Path(run_dir))
    m = store.manifest
    teacher = m.get("teacher") or {}
    invocations = _invocations(Path(run_dir), m)
    totals = {
        k: sum(int((inv.get("stats") or {}).get(k, 0)) for inv in invocations) for k in _COUNTERS
    }
    billed = sum(float((inv.get("stats") or {}).get("cost_usd", 0.0)) for inv in invocations)
    acc = accuracy_summary(store)
    price = price_for(str(teacher.get("model", "")))
    uncached = price.cost(acc["record_tokens"]["input"], acc["record_tokens"]["output"])
    return {
        "run": str(run_dir),
        "task": m.get("task"),
        "teacher": teacher,
        "prompt": m.get("prompt"),
        "samples": m.get("samples"),
        "temperature": m.get("temperature"),
        "requests": {
            "sent": totals["sent"],
            "succeeded": totals["ok"],
            "cache_hits": totals["cache_hits"],
            "rate_limited_429": totals["throttled"],
            "retried": totals["retries"],
            "failed": totals["failures"],
        },
        "tokens": {
            "billed_input": totals["input_tokens"],
            "billed_output": totals["output_tokens"],
            **{f"records_{k}": v for k, v in acc.pop("record_tokens").items()},
        },
        "estimated_cost_usd": {
            "billed": round(billed, 4),
            "all_records_at_list_price": round(uncached, 4),
            "price_known": price.known,
        },
        **acc,
        "invocations": [
            {k: inv.get(k) for k in ("started", "finished", "status", "message", "mode")}
            for inv in invocations
        ],
        "batch_jobs": _batch_jobs(m.get("cache"), run_dir),
    }


def failure_lines(path: str | os.PathLike[str], limit: int = 50) -> list[str]:
    """What `failures` prints: the newest `limit` (0: all) failed requests of a cache (or of a
    run directory's cache), one line each (when, cause, key, message), then a count by cause."""
    path = Path(path)
    if path.is_dir():
        path = Path(RationaleStore.open(path).manifest.get("cache") or path / "missing-cache")
    cache = Cache(path, readonly=True)
    try:
        rows = list(cache.failures())
    finally:
        cache.close()
    causes = Counter(_cause(r) for r in rows)
    shown = rows[-limit:] if limit else rows
    lines = [
        f"{time.strftime('%Y-%m-%dT%H:%M:%S', time.localtime(r['created']))}  {_cause(r)}  "
        f"{r['key'][:12]}  {' '.join(str(r['message']).split())[:300]}"
        for r in shown
    ]
    total = ", ".join(f"{n} {c}" for c, n in causes.most_common()) or "none"
    return [*lines, f"{len(rows)} failed request(s) in {path}: {total}"]


def _cause(row: dict[str, Any]) -> str:
    return failure_cause(str(row["error"]), row.get("status"), str(row["message"]))


def failure_cause(error: str, status: int | None, message: str) -> str:
    """A failed request's cause in a few words: "connection: ConnectError", "HTTP 500",
    "timeout: ReadTimeout", "malformed response", else the error's class (and status)."""
    head = message.split(":")
    if head[0] in ("connection", "timeout") and len(head) > 1:
        return f"{head[0]}: {head[1].strip()}"
    if len(head) > 1 and len(head[0]) <= 40:
        return head[0].split(" (")[0]
    return error + (f" {status}" if status else "")
