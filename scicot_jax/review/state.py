"""The review file of one rationale store, held in memory and rewritten atomically per decision.

The file is the one `scicot-teacher export` writes and `apply-review` reads (RUN/review.jsonl):
one line per record with `decision` (keep | drop | edit) and `rationale`. This module adds one
field, `version` (absent: 0, never reviewed here), bumped by every decision. A decision names
the version it was made on; a stale one (another tab, another reviewer) is refused as a
conflict, never written over. Every decision rewrites the whole file (temp file + fsync +
rename) before it is acknowledged, so a crash keeps every acknowledged decision. A file changed
on disk behind the app's back (a text editor, a second server) is read again before the next
decision is checked, and so is a store that grew (a teacher run still writing): its new records
join with their default decisions. A lock file beside the review file keeps two servers'
check-and-write apart.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import re
import threading
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from scicot_jax.data.store import RECORDS_FILE, RationaleStore
from scicot_jax.files import atomic_write
from scicot_jax.teacher import review as review_file
from scicot_jax.teacher.inputs import json_objects

DECISIONS = review_file.DECISIONS
REVIEW_FILE = "review.jsonl"
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}")


class Conflict(Exception):
    """The decision was made on an old version of the record; `item` is the current one."""

    def __init__(self, item: Item):
        super().__init__(f"{item.key}: changed to version {item.version} meanwhile")
        self.item = item


@dataclass
class Item:
    """One record under review: the store's record and the review file's line for it."""

    row: dict[str, Any]  # the review file's line (unknown fields kept as they are)
    original: str  # the rationale in the store

    @property
    def key(self) -> tuple[str, int]:
        return (self.row["example_id"], self.row["sample_index"])

    @property
    def version(self) -> int:
        return int(self.row.get("version") or 0)

    @property
    def reviewed(self) -> bool:
        return self.version > 0

    def public(self) -> dict[str, Any]:
        """What a page needs to show the record's current state."""
        return {
            "example_id": self.row["example_id"],
            "sample_index": self.row["sample_index"],
            "decision": self.row["decision"],
            "rationale": self.row["rationale"],
            "version": self.version,
        }


def _line(row: dict[str, Any]) -> bytes:
    return (json.dumps(row, ensure_ascii=False) + "\n").encode()


def _signature(path: Path) -> tuple[int, int, int] | None:
    try:
        st = path.stat()
    except FileNotFoundError:
        return None
    return (st.st_ino, st.st_mtime_ns, st.st_size)


@contextlib.contextmanager
def _file_lock(path: Path) -> Iterator[None]:
    """Held across check-and-write: two servers on one run never interleave theirs."""
    fd = os.open(path.with_name(f".{path.name}.lock"), os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # releases the lock


class ReviewState:
    """The records of a store with their review decisions; thread-safe."""

    def __init__(self, store_dir: str | os.PathLike[str], review_path: str | None = None):
        self.store_dir = Path(store_dir).resolve()
        self.path = Path(review_path) if review_path else self.store_dir / REVIEW_FILE
        self._lock = threading.Lock()
        self._load()

    # ------------------------------------------------------------------ loading
    def _load(self) -> None:
        store = RationaleStore.open(self.store_dir)
        if not self.path.exists():
            review_file.export(self.store_dir, self.path)  # the very file the CLI would write
        review_file._read_decisions(self.path)  # the checks apply-review makes, file:line named
        rows = {(d["example_id"], d["sample_index"]): d for _, d in json_objects(self.path)}
        examples = {ex.id: ex for ex in store.examples()}
        self.items: list[Item] = []
        added = False
        for rec in store.records():
            row = rows.pop(rec.key, None)
            if row is None:  # a record added to the store after the file was written
                added = True
                row = review_file.review_row(rec, examples.get(rec.example_id))
            self.items.append(Item(row, rec.rationale))
        if rows:
            key = next(iter(rows))
            raise review_file.ReviewError(f"{self.path}: {key} is not a record of {self.store_dir}")
        self.manifest = store.manifest
        self.by_key = {it.key: i for i, it in enumerate(self.items)}
        self._lines = [_line(it.row) for it in self.items]
        if added:  # apply-review wants a line per record: written now, as export would
            atomic_write(self.path, b"".join(self._lines))
        self._sig = self._signatures()

    def _signatures(self) -> tuple:
        """The review file's and the store's: a change in either is read again."""
        return (_signature(self.path), _signature(self.store_dir / RECORDS_FILE))

    def refresh(self) -> None:
        """Read the file again if something else changed it since it was last read or written."""
        with self._lock:
            if self._signatures() != self._sig:
                self._load()

    # ------------------------------------------------------------------ decisions
    def decide(
        self, key: tuple[str, int], decision: str, rationale: str | None, version: int
    ) -> Item:
        """Record a decision made on `version` of the record; written before it returns."""
        if decision not in DECISIONS:
            raise ValueError(f"decision must be one of {DECISIONS}, got {decision!r}")
        if decision == "edit" and not (isinstance(rationale, str) and rationale.strip()):
            raise ValueError("an edit needs a non-empty rationale")
        with self._lock, _file_lock(self.path):
            if self._signatures() != self._sig:
                self._load()
            if key not in self.by_key:
                raise KeyError(f"{key}: not a record of {self.store_dir}")
            i = self.by_key[key]
            item = self.items[i]
            if version != item.version:
                raise Conflict(item)
            # keep and drop restore the store's text: apply-review refuses a changed 'keep'.
            text = rationale if decision == "edit" else item.original
            row = {**item.row, "decision": decision, "rationale": text, "version": version + 1}
            lines = list(self._lines)
            lines[i] = _line(row)
            atomic_write(self.path, b"".join(lines))
            self._lines, self._sig = lines, self._signatures()
            item.row = row
            return item

    def progress(self) -> dict[str, int]:
        counts = Counter(it.row["decision"] for it in self.items)
        return {
            "total": len(self.items),
            "reviewed": sum(it.reviewed for it in self.items),
            **{d: counts.get(d, 0) for d in DECISIONS},
        }

    # ------------------------------------------------------------------ apply
    def default_name(self) -> str:
        return f"{self.store_dir.name}-reviewed"

    def apply(self, name: str) -> dict[str, Any]:
        """`apply-review` of this file into a new run named `name`, beside the store."""
        if not _NAME.fullmatch(name or ""):
            raise ValueError(
                f"run name {name!r}: use letters, digits, '.', '_' and '-' (at most 100)"
            )
        out = self.store_dir.parent / name
        if out.exists():
            raise FileExistsError(f"{out}: already exists; choose another name")
        with self._lock, _file_lock(self.path):  # no decision lands half-way through
            if self._signatures() != self._sig:
                self._load()
            return review_file.apply_review(self.store_dir, self.path, out)
