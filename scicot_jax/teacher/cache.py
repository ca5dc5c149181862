"""Persistent request cache: SQLite in WAL mode, keyed by sha256 of the canonical request.

Successes and failures live in separate tables: a failure is kept for the report but is never
served as a hit, so a re-run retries it. Responses hold only what the provider returned (no
headers, no keys); the request texts of successes live in a table of their own, so the table a
re-run looks every request up in stays narrow (a 1M-request B-tree of ~240 MB, not ~800 MB:
half the time a lookup). Use one connection per thread; one thread (the run's writer) writes.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import sqlite3
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

from scicot_jax.teacher.protocol import GenRequest, GenResponse

SCHEMA_VERSION = "2"  # 1: responses carried the request text (migrated on open)
BUSY_TIMEOUT_S = 60.0  # how long a statement waits for another process's write lock
# How long a writer opening a schema-1 cache waits for another process migrating it (~15 s per
# 1M requests): that migration's end, not BUSY_TIMEOUT_S, decides.
MIGRATION_WAIT_S = 3600.0

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (k TEXT PRIMARY KEY, v TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS responses (
    key TEXT PRIMARY KEY, response TEXT NOT NULL, created REAL NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS requests (key TEXT PRIMARY KEY, request TEXT NOT NULL) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS failures (
    id INTEGER PRIMARY KEY, key TEXT NOT NULL, request TEXT NOT NULL, error TEXT NOT NULL,
    status INTEGER, message TEXT NOT NULL, created REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS failures_key ON failures(key);
CREATE TABLE IF NOT EXISTS leases (
    key TEXT PRIMARY KEY, holder TEXT NOT NULL, expires REAL NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS invocations (
    id TEXT PRIMARY KEY, stats TEXT NOT NULL, updated REAL NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS batch_jobs (
    id TEXT PRIMARY KEY, run TEXT NOT NULL, provider TEXT NOT NULL, phase TEXT NOT NULL,
    state TEXT, remote_file TEXT, remote_id TEXT, input_path TEXT NOT NULL,
    requests INTEGER NOT NULL, est_cost REAL NOT NULL DEFAULT 0,
    succeeded INTEGER NOT NULL DEFAULT 0, failed INTEGER NOT NULL DEFAULT 0,
    input_tokens INTEGER NOT NULL DEFAULT 0, output_tokens INTEGER NOT NULL DEFAULT 0,
    cost REAL NOT NULL DEFAULT 0, created REAL NOT NULL, updated REAL NOT NULL, message TEXT,
    cancel_requested REAL, holder TEXT
);
CREATE INDEX IF NOT EXISTS batch_jobs_run ON batch_jobs(run, phase);
CREATE TABLE IF NOT EXISTS batch_items (
    job TEXT NOT NULL, key TEXT NOT NULL, request TEXT NOT NULL, outcome TEXT,
    PRIMARY KEY (job, key)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS batch_items_key ON batch_items(key);
"""
# leases: requests being sent right now, so that runs sharing the cache send each one once (an
# expired lease is a dead holder's and is taken over). A request in a batch job not collected
# yet is held by that job (batch_items) as by a lease, for as long as the job's holder (the
# run polling it) lives; batch jobs take no request leased by a live online run. invocations: each run's counters, saved
# in the transaction that stores its responses, so a killed run's report is still right.


# () -> (invocation id, counters): read inside the transaction that saves them, so the last
# commit always holds the newest counters.
Stats = Callable[[], tuple[str, dict[str, Any]]]
log = logging.getLogger(__name__)


class CacheError(RuntimeError):
    """The cache file is unusable (wrong schema, not SQLite)."""


class Cache:
    """One connection to the cache file; not shared between threads."""

    def __init__(self, path: str | os.PathLike[str], *, readonly: bool = False):
        self.path = Path(path)
        if readonly and not self.path.exists():
            raise FileNotFoundError(f"{self.path}: no such cache")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            # timeout= is SQLite's busy timeout (what PRAGMA busy_timeout sets)
            self._db = sqlite3.connect(self.path, timeout=BUSY_TIMEOUT_S, isolation_level=None)
            if not readonly:
                # WAL: readers never block the writer; NORMAL: commits survive a killed process.
                self._db.execute("PRAGMA journal_mode=WAL")
                self._db.execute("PRAGMA synchronous=NORMAL")
                if _schema(self._db) == "1":
                    self._migrate_from_1()
                self._db.executescript(_SCHEMA)
                cols = {r[1] for r in self._db.execute("PRAGMA table_info(batch_jobs)")}
                for col, kind in (("cancel_requested", "REAL"), ("holder", "TEXT")):
                    if col not in cols:  # a batch_jobs table from before the column existed
                        self._db.execute(f"ALTER TABLE batch_jobs ADD COLUMN {col} {kind}")
                self._db.execute(
                    "INSERT OR IGNORE INTO meta(k, v) VALUES ('schema', ?)", (SCHEMA_VERSION,)
                )
            version = _schema(self._db)
        except sqlite3.DatabaseError as e:
            raise CacheError(f"{self.path}: not a usable teacher cache ({e})") from e
        # A reader may read a schema-1 cache as it is: only items() reads the request texts.
        self._v1 = readonly and version == "1"
        if version != SCHEMA_VERSION and not self._v1:
            raise CacheError(f"{self.path}: cache schema {version!r}, want {SCHEMA_VERSION}")

    def _migrate_from_1(self) -> None:
        """Schema 1 -> 2: the request texts move out of the responses table (once, in one
        transaction: a killed migration leaves the schema-1 cache as it was)."""
        log.info("%s: moving request texts out of the responses table (once)", self.path)
        self._busy_timeout(MIGRATION_WAIT_S)
        try:
            with _transaction(self._db):
                if _schema(self._db) != "1":  # another process migrated it meanwhile
                    return
                # One statement at a time: executescript would commit the transaction first.
                for sql in (
                    "CREATE TABLE requests (key TEXT PRIMARY KEY, request TEXT NOT NULL)"
                    " WITHOUT ROWID",
                    "INSERT INTO requests SELECT key, request FROM responses",
                    "CREATE TABLE responses_2 (key TEXT PRIMARY KEY, response TEXT NOT NULL,"
                    " created REAL NOT NULL) WITHOUT ROWID",
                    "INSERT INTO responses_2 SELECT key, response, created FROM responses",
                    "DROP TABLE responses",
                    "ALTER TABLE responses_2 RENAME TO responses",
                    f"UPDATE meta SET v='{SCHEMA_VERSION}' WHERE k='schema'",
                ):
                    self._db.execute(sql)
        finally:
            self._busy_timeout(BUSY_TIMEOUT_S)

    def _busy_timeout(self, seconds: float) -> None:
        self._db.execute(f"PRAGMA busy_timeout={int(seconds * 1000)}")

    # -- reads ------------------------------------------------------------------------
    def get(self, key: str) -> GenResponse | None:
        """The cached successful response for `key`, or None (failures are never hits)."""
        row = self._db.execute("SELECT response FROM responses WHERE key=?", (key,)).fetchone()
        return None if row is None else GenResponse.from_json(row[0])

    def get_many(self, keys: list[str]) -> dict[str, GenResponse]:
        """key -> cached response for those of `keys` that are cached (one query per 500)."""
        q = "SELECT key, response FROM responses WHERE key IN ({})"
        return {k: GenResponse.from_json(r) for k, r in select_in(self._db, q, keys)}

    def __contains__(self, key: str) -> bool:
        return (
            self._db.execute("SELECT 1 FROM responses WHERE key=?", (key,)).fetchone() is not None
        )

    def __len__(self) -> int:
        return self._db.execute("SELECT COUNT(*) FROM responses").fetchone()[0]

    def items(self) -> Iterator[tuple[GenRequest, GenResponse]]:
        """Every cached (request, response), streaming."""
        q = (
            "SELECT request, response FROM responses"
            if self._v1
            else "SELECT q.request, r.response FROM responses r JOIN requests q USING (key)"
        )
        for req, resp in self._db.execute(q):
            yield GenRequest.from_canonical(req), GenResponse.from_json(resp)

    def failures(self) -> Iterator[dict]:
        """Recorded failures, oldest first."""
        q = "SELECT key, request, error, status, message, created FROM failures ORDER BY id"
        for key, req, err, status, msg, created in self._db.execute(q):
            yield {
                "key": key,
                "request": req,
                "error": err,
                "status": status,
                "message": msg,
                "created": created,
            }

    def failure_count(self) -> int:
        return self._db.execute("SELECT COUNT(*) FROM failures").fetchone()[0]

    def invocation_stats(self, invocation: str) -> dict | None:
        """The counters last saved by an invocation of `run`, or None."""
        try:
            row = self._db.execute(
                "SELECT stats FROM invocations WHERE id=?", (invocation,)
            ).fetchone()
        except sqlite3.OperationalError:  # a cache from before the table existed
            return None
        return None if row is None else json.loads(row[0])

    # -- leases (any thread with its own connection) ---------------------------------------
    def lease(self, key: str, holder: str, ttl: float, stats: Stats | None = None) -> str:
        """'hit' (cached meanwhile), 'busy' (another holder's live lease, or a batch job being
        polled holds it), 'orphan' (a batch job whose run stopped holds it) or 'leased'.

        Taking or renewing a lease saves `stats` (invocation id, counters as JSON) in the same
        transaction, so a request counted as sent is one the cache knows about.
        """
        with _transaction(self._db):
            if self._db.execute("SELECT 1 FROM responses WHERE key=?", (key,)).fetchone():
                return "hit"
            job = self._db.execute(
                "SELECT j.holder FROM batch_items i JOIN batch_jobs j ON i.job=j.id"
                " WHERE i.key=? AND j.phase!='collected' LIMIT 1",
                (key,),
            ).fetchone()
            if job is not None:  # the provider may have it: only that job may answer it
                return "busy" if job[0] and holder_alive(job[0]) else "orphan"
            now = time.time()
            row = self._db.execute(
                "SELECT holder, expires FROM leases WHERE key=?", (key,)
            ).fetchone()
            if row is not None and row[0] != holder and row[1] > now and holder_alive(row[0]):
                return "busy"
            self._db.execute(
                "INSERT OR REPLACE INTO leases(key, holder, expires) VALUES (?, ?, ?)",
                (key, holder, now + ttl),
            )
            self._save_stats(stats, now)
        return "leased"

    def leased_by_others(self, keys: list[str], holder: str) -> set[str]:
        """Those of `keys` under another holder's live lease (an online run sending them)."""
        now, q = time.time(), "SELECT key, holder, expires FROM leases WHERE key IN ({})"
        return {
            key
            for key, other, expires in select_in(self._db, q, keys)
            if other != holder and expires > now and holder_alive(other)
        }

    def cached_keys(self, keys: list[str]) -> set[str]:
        """Those of `keys` that have a cached response."""
        q = "SELECT key FROM responses WHERE key IN ({})"
        return {k for (k,) in select_in(self._db, q, keys)}

    def release_leases(self, holder: str) -> None:
        """Drops every lease of `holder` (a run that stops hands its requests over)."""
        with _transaction(self._db):
            self._db.execute("DELETE FROM leases WHERE holder=?", (holder,))

    def _save_stats(self, stats: Stats | None, now: float) -> None:
        if stats is not None:
            invocation, counters = stats()
            self._db.execute(
                "INSERT OR REPLACE INTO invocations(id, stats, updated) VALUES (?, ?, ?)",
                (invocation, json.dumps(counters), now),
            )

    # -- writes (one writer thread) ------------------------------------------------------
    def put(self, req: GenRequest, resp: GenResponse) -> None:
        self.write_batch([(req, resp)], [])

    def put_failure(self, req: GenRequest, error: str, status: int | None, message: str) -> None:
        self.write_batch([], [(req, error, status, message)])

    def write_batch(
        self,
        ok: Iterable[tuple[GenRequest, GenResponse]],
        failed: Iterable[tuple[GenRequest, str, int | None, str]],
        stats: Stats | None = None,
    ) -> None:
        """Commit successes and failures in one transaction (group commit), release their
        leases and save the invocation's counters (`stats`) with them."""
        now = time.time()
        ok_rows = [(r.key, r.canonical(), s.to_json(), now) for r, s in ok]
        fail_rows = [(r.key, r.canonical(), e, st, m, now) for r, e, st, m in failed]
        if not ok_rows and not fail_rows and stats is None:
            return
        with _transaction(self._db):
            done = [(row[0],) for row in ok_rows + fail_rows]
            if done:
                self._db.executemany("DELETE FROM leases WHERE key=?", done)
            self._save_stats(stats, now)
            if ok_rows:
                self.insert_responses(ok_rows)
            if fail_rows:
                self._db.executemany(
                    "INSERT INTO failures(key, request, error, status, message, created) "
                    "VALUES (?, ?, ?, ?, ?, ?)",
                    fail_rows,
                )

    def insert_responses(self, rows: list[tuple[str, str, str, float]]) -> None:
        """(key, request text, response JSON, created) rows, inside the caller's transaction;
        a key already cached keeps its first response."""
        self._db.executemany(
            "INSERT OR IGNORE INTO responses(key, response, created) VALUES (?, ?, ?)",
            [(k, resp, t) for k, _, resp, t in rows],
        )
        self._db.executemany(
            "INSERT OR IGNORE INTO requests(key, request) VALUES (?, ?)",
            [(k, req) for k, req, _, _ in rows],
        )

    # -- batch jobs (teacher/batch.py keeps their bookkeeping here, beside the responses) ---
    @property
    def db(self) -> sqlite3.Connection:
        return self._db

    def transaction(self) -> _transaction:
        """BEGIN IMMEDIATE ... COMMIT on this connection."""
        return _transaction(self._db)

    def close(self) -> None:
        self._db.close()

    def __enter__(self) -> Cache:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _schema(db: sqlite3.Connection) -> str | None:
    """The schema version a cache file records (None: a new file)."""
    try:
        row = db.execute("SELECT v FROM meta WHERE k='schema'").fetchone()
    except sqlite3.OperationalError:  # no meta table yet
        return None
    return row and row[0]


def holder_alive(holder: str) -> bool:
    """False for a lease holder ("host:pid:...") that was a process of this host, now gone."""
    host, _, rest = holder.partition(":")
    pid = rest.partition(":")[0]
    if host != socket.gethostname() or not pid.isdigit():
        return True  # another machine's: only its lease's expiry tells
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def select_in(db: sqlite3.Connection, query: str, keys: list[str]) -> Iterator[tuple[Any, ...]]:
    """The rows of `query` with its "{}" bound to `keys`, 500 keys a statement (SQLite limits
    the parameters of one statement)."""
    for i in range(0, len(keys), 500):
        part = keys[i : i + 500]
        yield from db.execute(query.format(",".join("?" * len(part))), part)


class _transaction:
    """BEGIN IMMEDIATE ... COMMIT (ROLLBACK on error) on an autocommit connection."""

    def __init__(self, db: sqlite3.Connection):
        self.db = db

    def __enter__(self) -> None:
        self.db.execute("BEGIN IMMEDIATE")

    def __exit__(self, exc_type: object, *rest: object) -> None:
        self.db.execute("ROLLBACK" if exc_type else "COMMIT")
