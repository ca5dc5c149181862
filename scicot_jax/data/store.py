"""Rationale store: one run directory = records.jsonl + manifest.json (+ examples.jsonl).

Layout of a run directory:
  manifest.json         run metadata (teacher, prompt, temperature, D, ...), written atomically
  records.jsonl         one RationaleRecord per line, appended atomically (single write + fsync)
  examples.jsonl        optional: the Examples the records refer to (makes the run self-describing)
  records.jsonl.corrupt truncated tails moved aside by crash repair

One writer process at a time (enforced with an advisory lock taken on the first append);
any number of readers.
"""

from __future__ import annotations

import json
import os
import time
import warnings
from array import array
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from scicot_jax.data.key_index import KeyIndex, key_hash, sorted_duplicates
from scicot_jax.files import atomic_write, read_json, read_jsonl, try_lock, write_jsonl

RECORDS_FILE = "records.jsonl"
MANIFEST_FILE = "manifest.json"
EXAMPLES_FILE = "examples.jsonl"
CORRUPT_SUFFIX = ".corrupt"
LOCK_FILE = ".writer.lock"
FORMAT = "scicot-rationales/1"

Key = tuple[str, int]


class StoreError(ValueError):
    """A malformed store file; the message names file:line and field."""


@dataclass
class RationaleRecord:
    """One rationale for one example: who wrote it, what answer it reaches, whether it is right."""

    example_id: str
    sample_index: int
    rationale: str
    answer: str | None
    correct: bool | None
    source: str  # "teacher:<model>" | "student:<checkpoint>" | "import:<dataset>"
    prompt_kind: str
    temperature: float | None  # None: not recorded (some imported releases)
    input_tokens: int = 0
    output_tokens: int = 0
    split: str = "train"
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def key(self) -> Key:
        return (self.example_id, self.sample_index)

    def to_json(self) -> dict[str, Any]:
        """Plain-dict form, as stored on one line of records.jsonl."""
        d = dict(self.__dict__)  # field order; dataclasses.asdict is slow per record
        d["extra"] = dict(self.extra)  # a shallow copy
        return d

    @classmethod
    def from_valid(cls, d: dict[str, Any]) -> RationaleRecord:
        """Build from a dict that passed `_well_typed`."""
        t = d["temperature"]
        return cls(**d) if type(t) is not int else cls(**{**d, "temperature": float(t)})

    @classmethod
    def from_json(cls, d: Any, where: str = "record") -> RationaleRecord:
        """Validate and build; errors name `where` (e.g. 'path:line') and the field."""
        if _well_typed(d):
            return cls.from_valid(d)
        if not isinstance(d, dict):
            raise StoreError(f"{where}: expected a JSON object, got {type(d).__name__}")
        unknown = set(d) - _FIELD_TYPES.keys()
        if unknown:
            raise StoreError(f"{where}: unknown field(s) {sorted(unknown)}")
        kwargs = {}
        for name, (types, required) in _FIELD_TYPES.items():
            if name not in d:
                if required:
                    raise StoreError(f"{where}: missing field '{name}'")
                continue
            value = d[name]
            if type(value) in types:  # the common case, decided without isinstance
                kwargs[name] = value
                continue
            # bool is an int subclass; never accept it where a number is meant.
            ok = isinstance(value, types) and not (isinstance(value, bool) and bool not in types)
            if not ok:
                want = " or ".join("null" if t is type(None) else t.__name__ for t in types)
                raise StoreError(
                    f"{where}: field '{name}': expected {want}, got {json.dumps(value)[:80]}"
                )
            kwargs[name] = value
        if kwargs["sample_index"] < 0:
            raise StoreError(f"{where}: field 'sample_index': must be >= 0")
        if kwargs["temperature"] is not None:
            kwargs["temperature"] = float(kwargs["temperature"])
        return cls(**kwargs)


_FIELD_TYPES: dict[str, tuple[tuple[type, ...], bool]] = {
    "example_id": ((str,), True),
    "sample_index": ((int,), True),
    "rationale": ((str,), True),
    "answer": ((str, type(None)), True),
    "correct": ((bool, type(None)), True),
    "source": ((str,), True),
    "prompt_kind": ((str,), True),
    "temperature": ((int, float, type(None)), True),
    "input_tokens": ((int,), False),
    "output_tokens": ((int,), False),
    "split": ((str,), False),
    "extra": ((dict,), False),
}


_ALL_FIELDS = _FIELD_TYPES.keys()
_STR_NONE, _BOOL_NONE = (str, type(None)), (bool, type(None))
_NUMBER_NONE = (int, float, type(None))


def _well_typed(d: Any) -> bool:
    """The common case of a valid record (every field present, each of an exact type that
    _FIELD_TYPES allows), decided without a loop (it runs per record, read and written);
    anything else takes from_json's field-by-field path and its error."""
    return (
        type(d) is dict
        and d.keys() == _ALL_FIELDS
        and type(d["example_id"]) is str
        and type(d["sample_index"]) is int
        and d["sample_index"] >= 0
        and type(d["rationale"]) is str
        and type(d["answer"]) in _STR_NONE
        and type(d["correct"]) in _BOOL_NONE
        and type(d["source"]) is str
        and type(d["prompt_kind"]) is str
        and type(d["temperature"]) in _NUMBER_NONE
        and type(d["input_tokens"]) is int
        and type(d["output_tokens"]) is int
        and type(d["split"]) is str
        and type(d["extra"]) is dict
    )


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        n = os.write(fd, view)
        view = view[n:]


# Every line is pure ASCII, so a byte-level cut can't split a character.
_LINE = json.JSONEncoder(ensure_ascii=True, sort_keys=True)
_ORJSON_LINE = orjson.OPT_SORT_KEYS | orjson.OPT_APPEND_NEWLINE


def _encode_json(d: dict[str, Any]) -> bytes:
    """One line of JSON: orjson's (10x faster) when it is ASCII, else the json module's
    (non-ASCII text escaped; values orjson refuses get json's usual error)."""
    try:
        line = orjson.dumps(d, option=_ORJSON_LINE)
    except (TypeError, orjson.JSONEncodeError):
        line = b""
    return line if line and line.isascii() else (_LINE.encode(d) + "\n").encode()


def encode_record(rec: RationaleRecord) -> bytes:
    """The record's line of records.jsonl (newline included), validated: a bad record fails
    here, not when read."""
    d = rec.to_json()
    if not _well_typed(d):
        RationaleRecord.from_json(d, f"record {rec.key}")
    return _encode_json(d)


class RationaleStore:
    """A run directory of rationale records; see the module docstring for the layout."""

    def __init__(self, run_dir: str | os.PathLike[str]):
        self.run_dir = Path(run_dir)
        self.records_path = self.run_dir / RECORDS_FILE
        self.manifest_path = self.run_dir / MANIFEST_FILE
        if not self.manifest_path.exists():
            raise FileNotFoundError(f"{self.manifest_path}: not a rationale run (no manifest)")
        self.manifest: dict[str, Any] = self._read_manifest()
        self._lock_fd: int | None = None
        if not self.records_path.exists():
            self.records_path.touch()
        # Every whole line is checked before crash repair may touch the file: a store refused
        # for a bad line is left exactly as it was.
        self._index: KeyIndex | None = None
        self._build_index()
        if self._repair_tail():
            self._build_index()  # the repaired last record joins the index

    def _build_index(self) -> KeyIndex:
        """Read every record (validating it) into the key index; repeated keys refused."""
        # 8 bytes per record (not a set of tuples): 10M records stay at ~80 MB resident.
        hashes = array("Q", (key_hash(*rec.key) for rec in self.records()))
        self._count = len(hashes)
        dup = sorted_duplicates(hashes)
        self._index = KeyIndex(hashes)
        if dup:
            self._resolve_duplicates(dup)
        return self._index

    @property
    def index(self) -> KeyIndex:
        return self._index if self._index is not None else self._build_index()

    def release_index(self) -> None:
        """Free the key index (a writer done writing); it is read again if needed."""
        self._index = None

    def _with_hashes(self, hashes: set[int]) -> dict[int, list[tuple[Key, int]]]:
        """hash -> [(key, line number)] of the stored records whose key hash is in `hashes`."""
        found: dict[int, list[tuple[Key, int]]] = {}
        for lineno, rec in enumerate(self.records(), 1):
            h = key_hash(*rec.key)
            if h in hashes:
                found.setdefault(h, []).append((rec.key, lineno))
        return found

    def _resolve_duplicates(self, dup: set[int]) -> None:
        """Equal hashes at open: a repeated key is an error; distinct keys a (rare) collision."""
        repeats = []
        for h, hits in self._with_hashes(dup).items():
            seen: set[Key] = set()
            for key, lineno in hits:
                if key in seen:
                    repeats.append((lineno, key))
                seen.add(key)
            if len(seen) > 1:
                self.index.add_collision(h, seen)
        if repeats:
            lineno, (eid, k) = min(repeats)
            raise StoreError(
                f"{self.records_path}:{lineno}: duplicate record for example_id={eid!r} "
                f"sample_index={k}"
            )

    # -- construction -------------------------------------------------------------------
    @classmethod
    def create(
        cls, run_dir: str | os.PathLike[str], manifest: dict[str, Any], *, exist_ok: bool = False
    ) -> RationaleStore:
        """Make a new run; with exist_ok an existing run is opened as is (for resuming)."""
        run_dir = Path(run_dir)
        if (run_dir / MANIFEST_FILE).exists():
            if exist_ok:
                return cls(run_dir)
            raise FileExistsError(f"{run_dir / MANIFEST_FILE}: run already exists")
        run_dir.mkdir(parents=True, exist_ok=True)
        full = {"format": FORMAT, "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"), **manifest}
        (run_dir / RECORDS_FILE).touch()
        atomic_write(run_dir / MANIFEST_FILE, json.dumps(full, indent=2, sort_keys=True) + "\n")
        return cls(run_dir)

    @classmethod
    def open(cls, run_dir: str | os.PathLike[str]) -> RationaleStore:
        """Open an existing run, repairing a crash-truncated last line."""
        return cls(run_dir)

    @staticmethod
    def is_run_dir(path: str | os.PathLike[str]) -> bool:
        return (Path(path) / MANIFEST_FILE).is_file()

    def _read_manifest(self) -> dict[str, Any]:
        return self.read_manifest(self.run_dir)

    @staticmethod
    def read_manifest(run_dir: str | os.PathLike[str]) -> dict[str, Any]:
        """A run's manifest.json alone (without reading its records)."""
        path = Path(run_dir) / MANIFEST_FILE
        manifest = read_json(path, StoreError)
        if not isinstance(manifest, dict):
            raise StoreError(f"{path}:1: expected a JSON object")
        return manifest

    def update_manifest(self, **kv: Any) -> dict[str, Any]:
        """Merge keys into manifest.json (atomic replace) and return the new manifest."""
        self.manifest = {**self._read_manifest(), **kv}
        text = json.dumps(self.manifest, indent=2, sort_keys=True) + "\n"
        atomic_write(self.manifest_path, text)
        return self.manifest

    # -- crash repair -------------------------------------------------------------------
    def _repair_tail(self) -> bool:
        """A crash mid-append leaves a last line without newline: keep it if whole, else move it
        aside. True when a whole last record was completed (it is a record now)."""
        size = self.records_path.stat().st_size
        if size == 0:
            return False
        with open(self.records_path, "rb") as f:
            # Find the last newline by scanning backwards in chunks (files can be large).
            pos, tail = size, b""
            while pos > 0:
                step = min(1 << 16, pos)
                pos -= step
                f.seek(pos)
                tail = f.read(step) + tail
                nl = tail.rfind(b"\n")
                if nl >= 0:
                    tail = tail[nl + 1 :]
                    pos += nl + 1
                    break
            else:
                pos = 0
        if not tail:
            return False
        lineno = self._count_lines(pos) + 1
        where = f"{self.records_path}:{lineno}"
        try:
            last = RationaleRecord.from_json(json.loads(tail.decode()), where)
            whole = True
        except (ValueError, UnicodeDecodeError):
            whole = False
        if whole and last.key in self.index:  # refused before anything is written
            raise StoreError(
                f"{where}: duplicate record for example_id={last.example_id!r} "
                f"sample_index={last.sample_index}"
            )
        if not self._try_lock():
            return False  # a live writer in another process: the tail is its append in flight
        try:
            self._fix_tail(pos, tail, whole, where)
        finally:
            self.close()
        return whole

    def _fix_tail(self, pos: int, tail: bytes, whole: bool, where: str) -> None:
        if whole:
            # The write completed except for the newline (cut exactly there): keep the record.
            fd = os.open(self.records_path, os.O_WRONLY | os.O_APPEND)
            try:
                _write_all(fd, b"\n")
                os.fsync(fd)
            finally:
                os.close(fd)
            warnings.warn(
                f"{where}: last record lacked its newline (crash); completed it", stacklevel=4
            )
            return
        corrupt = self.records_path.with_name(self.records_path.name + CORRUPT_SUFFIX)
        with open(corrupt, "ab") as f:
            f.write(tail + b"\n")
            f.flush()
            os.fsync(f.fileno())
        with open(self.records_path, "r+b") as f:
            f.truncate(pos)
            f.flush()
            os.fsync(f.fileno())
        warnings.warn(
            f"{where}: truncated last line ({len(tail)} bytes, from a crash mid-append) "
            f"moved to {corrupt}",
            stacklevel=4,
        )

    def _count_lines(self, upto: int) -> int:
        n = 0
        with open(self.records_path, "rb") as f:
            while upto > 0:
                chunk = f.read(min(1 << 20, upto))
                if not chunk:
                    break
                n += chunk.count(b"\n")
                upto -= len(chunk)
        return n

    # -- writing ------------------------------------------------------------------------
    def _try_lock(self) -> bool:
        if self._lock_fd is not None:
            return True
        self._lock_fd = try_lock(self.run_dir / LOCK_FILE)
        return self._lock_fd is not None

    def _take_writer_lock(self) -> None:
        if not self._try_lock():
            raise RuntimeError(f"{self.run_dir}: another process is writing to this run")

    def append(self, record: RationaleRecord) -> None:
        """Append one record durably (one write of a whole line, flush, fsync)."""
        self.extend([record])

    def extend(self, records: Iterable[RationaleRecord]) -> int:
        """Append many records with one write + fsync; each line stays whole. Returns the count."""
        return self.extend_encoded([(rec.key, encode_record(rec)) for rec in records])

    def extend_encoded(self, entries: list[tuple[Key, bytes]]) -> int:
        """extend() for records already encoded by `encode_record` (key, line): one write +
        fsync; a key stored already, or twice in `entries`, fails before anything is written."""
        seen: dict[Key, int] = {}
        maybe_stored: dict[int, Key] = {}
        for key, _ in entries:
            h = key_hash(*key)
            if key in seen:
                self._already(key)
            if self.index.contains_hash(h):
                maybe_stored[h] = key
            seen[key] = h
        if not entries:
            return 0
        if maybe_stored:  # a stored key or a hash collision: settle it exactly (rare)
            for h, hits in self._with_hashes(set(maybe_stored)).items():
                keys = {key for key, _ in hits}
                if maybe_stored[h] in keys:
                    self._already(maybe_stored[h])
                self.index.add_collision(h, keys | {maybe_stored[h]})
        self._take_writer_lock()
        fd = os.open(self.records_path, os.O_WRONLY | os.O_APPEND)
        try:
            _write_all(fd, b"".join(line for _, line in entries))
            os.fsync(fd)
        finally:
            os.close(fd)
        for h in seen.values():
            self.index.add_hash(h)
        self._count += len(entries)
        return len(entries)

    def _already(self, key: Key) -> None:
        raise KeyError(
            f"{self.records_path}: record example_id={key[0]!r} sample_index={key[1]} "
            "already stored"
        )

    def close(self) -> None:
        """Release the writer lock (records are already durable)."""
        if getattr(self, "_lock_fd", None) is not None:
            os.close(self._lock_fd)
            self._lock_fd = None

    def __enter__(self) -> RationaleStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __del__(self) -> None:
        self.close()

    # -- reading ------------------------------------------------------------------------
    def records(self, split: str | None = None) -> Iterator[RationaleRecord]:
        """Records in file order (optionally one split); a bad line raises with file:line."""
        # complete_lines: a last line without its newline is a concurrent writer's append
        for lineno, obj in read_jsonl(self.records_path, StoreError, complete_lines=True):
            if _well_typed(obj):  # the common case, without naming the line per record
                rec = RationaleRecord.from_valid(obj)
            else:
                rec = RationaleRecord.from_json(obj, f"{self.records_path}:{lineno}")
            if split is None or rec.split == split:
                yield rec

    def by_example(self, split: str | None = None) -> dict[str, list[RationaleRecord]]:
        """Records grouped per example id, each list sorted by sample_index."""
        groups: dict[str, list[RationaleRecord]] = {}
        for rec in self.records(split):
            groups.setdefault(rec.example_id, []).append(rec)
        for recs in groups.values():
            recs.sort(key=lambda r: r.sample_index)
        return groups

    def keys(self) -> set[Key]:
        """(example_id, sample_index) of every stored record (read from the file)."""
        return {rec.key for rec in self.records()}

    def __contains__(self, key: object) -> bool:
        return key in self.index

    def __len__(self) -> int:
        return self._count

    # -- examples -----------------------------------------------------------------------
    @property
    def examples_path(self) -> Path:
        return self.run_dir / EXAMPLES_FILE

    def write_examples(self, examples: Iterable[Any]) -> int:
        """Write examples.jsonl atomically (Example objects or plain dicts); returns the count."""
        rows = (ex if isinstance(ex, dict) else ex.to_json() for ex in examples)
        rows = (json.loads(d) if isinstance(d, str) else d for d in rows)
        return write_jsonl(self.examples_path, rows, sort_keys=True)

    def examples(self) -> list[Any]:
        """The run's Examples from examples.jsonl ([] if the run has none)."""
        if not self.examples_path.exists():
            return []
        from scicot_jax.data.examples import Example

        out = []
        for lineno, obj in read_jsonl(self.examples_path, StoreError):
            try:
                out.append(Example.from_json(obj))
            except (ValueError, TypeError, KeyError, AttributeError) as e:
                raise StoreError(f"{self.examples_path}:{lineno}: bad example ({e})") from e
        return out
