"""A run directory's manifest: the run's settings, card and input (checked on resume), and its
invocations (each one's status and counters)."""

from __future__ import annotations

import hashlib
import json
import os
import socket
import time
import uuid
from array import array
from pathlib import Path
from typing import IO, Any
from urllib.parse import urlsplit, urlunsplit

from scicot_jax.data.cards import TaskCard, load_card
from scicot_jax.data.store import RationaleStore
from scicot_jax.teacher.cache import Cache
from scicot_jax.teacher.config import RunConfig
from scicot_jax.teacher.inputs import ExampleSource, InputError, duplicate_hashes, id_hash
from scicot_jax.teacher.progress import Stats
from scicot_jax.teacher.report import mark_interrupted


class RunMismatch(ValueError):
    """The output directory holds a run made with different settings or examples."""


class RunManifest:
    """What a run is: its settings, card and input, written once and checked on every resume."""

    def __init__(
        self,
        cfg: RunConfig,
        card: TaskCard,
        source: ExampleSource,
        input_desc: dict[str, Any],
        out_dir: Path,
        cache_path: Path,
    ):
        self.cfg, self.card, self.source, self.input_desc = cfg, card, source, input_desc
        self.out_dir, self.cache_path = out_dir, cache_path

    def existing(self) -> dict[str, Any] | None:
        """The manifest of the run being resumed (settings checked), or None for a new run."""
        if not RationaleStore.is_run_dir(self.out_dir):
            return None
        manifest = RationaleStore.read_manifest(self.out_dir)
        sig, want = manifest.get("signature"), self.cfg.signature()
        if sig is not None and sig != want:
            diff = sorted(k for k in set(sig) | set(want) if sig.get(k) != want.get(k))
            raise RunMismatch(
                f"{self.out_dir}: the run was made with other settings ({diff}); "
                "use the same arguments to resume, or a new --out"
            )
        return manifest

    def new(self) -> dict[str, Any]:
        """The manifest of a new run (no invocations yet)."""
        cfg = self.cfg
        return {
            "kind": "teacher",
            "card": self.card_ref(),
            "task": self.card.name,
            "answer_type": self.card.answer_type,
            "compat": self.card.compat,
            "split": cfg.split,
            "input": self.input_desc,
            "teacher": {
                "backend": cfg.backend,
                "provider": cfg.provider,
                "model": cfg.model,
                "base_url": safe_url(cfg.base_url),
            },
            "prompt": cfg.prompt,
            "samples": cfg.samples,
            "temperature": cfg.temperature,
            "signature": cfg.signature(),
            "cache": str(self.cache_path.resolve()),
            "invocations": [],
        }

    def card_ref(self) -> str:
        """The card's name if it is the shipped card of that name, else its path."""
        try:
            shipped = load_card(self.card.name)
        except ValueError:
            return self.card.path
        return (
            self.card.name
            if Path(shipped.path).resolve() == Path(self.card.path).resolve()
            else self.card.path
        )

    def scan(self, manifest: dict[str, Any] | None, write_to: IO[bytes] | None) -> dict[str, Any]:
        """One pass over the examples: count, digest, duplicates, examples.jsonl."""
        # 8 bytes per id (not a set of str): duplicates are found by sorting, memory stays small.
        digest, n, hashes = hashlib.sha256(), 0, array("Q")
        old = (manifest.get("examples") or {}) if manifest else {}
        old_n, prefix = int(old.get("count", 0)), None
        for ex in self.source():
            line = (ex.json_line() + "\n").encode()  # a resumed run matches their sha256
            hashes.append(id_hash(ex.id))
            digest.update(line)
            n += 1
            if n == old_n:
                prefix = digest.hexdigest()
            if write_to:
                write_to.write(line)
        if n == 0:
            raise InputError(f"the input has no examples ({json.dumps(self.input_desc)})")
        self._check_unique(hashes)
        del hashes
        if old_n and (n < old_n or prefix != old.get("sha256")):
            raise RunMismatch(
                f"{self.out_dir}: the run was made from {old_n} other examples; the input "
                f"({n} examples) must repeat them first (or use a new --out)"
            )
        return {"count": n, "sha256": digest.hexdigest()}

    def _check_unique(self, hashes: array) -> None:
        dup = duplicate_hashes(hashes)
        if dup:
            bad = set(sorted(dup)[:5])
            names = sorted({ex.id for ex in self.source() if id_hash(ex.id) in bad})
            raise InputError(f"duplicate example id(s) in the input: {names}")


class Invocation:
    """This invocation of the run: its id in the cache (counters, leases), its manifest entry."""

    def __init__(self, stats: Stats):
        self.id = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self.stats = stats
        self.entries: list[dict[str, Any]] = []  # the manifest's invocations, this one last

    def counters(self) -> tuple[str, dict[str, Any]]:
        """(invocation id, counters): what the cache saves as this invocation's stats."""
        return self.id, self.stats.to_json()

    def begin(self, store: RationaleStore, cache: Cache, cfg: RunConfig, examples: dict) -> None:
        """Record this invocation as running (earlier ones that died: interrupted)."""
        self.entries = [
            mark_interrupted(inv, cache) for inv in store.manifest.get("invocations", [])
        ]
        self.entries.append(
            {
                "id": self.id,
                "started": now(),
                "status": "running",
                "samples": cfg.samples,
                "mode": cfg.mode,
            }
        )
        store.update_manifest(
            examples=examples,
            samples=max(cfg.samples, store.manifest.get("samples", 1)),
            invocations=self.entries,
        )

    def end(self, store: RationaleStore, status: str, message: str) -> None:
        """Record how this invocation ended, with its counters."""
        self.entries[-1].update(
            finished=now(), status=status, message=message, stats=self.stats.to_json()
        )
        store.update_manifest(invocations=self.entries)


def safe_url(url: str | None) -> str | None:
    """A URL fit for the manifest: no query string or user info (where keys can hide)."""
    if not url:
        return url
    parts = urlsplit(url)
    host = parts.hostname or ""
    netloc = f"{host}:{parts.port}" if parts.port else host
    return urlunsplit((parts.scheme, netloc, parts.path, "", ""))


def now() -> str:
    """Local time, as the manifest writes it."""
    return time.strftime("%Y-%m-%dT%H:%M:%S%z")
