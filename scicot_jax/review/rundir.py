"""What a run directory holds (stores, results, metrics, plots, predictions, selections), found
by walking it; paths that come from requests are resolved inside it or refused."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from scicot_jax.data.store import MANIFEST_FILE, RECORDS_FILE
from scicot_jax.files import read_json

# Checkpoints and inference inputs hold thousands of files and nothing the pages show.
_SKIP_DIRS = ("checkpoint", "infer", "__pycache__", "node_modules")
MAX_DEPTH = 4
PLOT_SUFFIXES = (".png", ".svg", ".jpg", ".jpeg")


class OutsideRun(ValueError):
    """A requested path leaves RUN_DIR (.., an absolute path, or a symlink pointing out)."""


def inside(root: Path, rel: str) -> Path:
    """RUN_DIR/rel with symlinks resolved; OutsideRun when the result is not under RUN_DIR."""
    base = root.resolve()
    if not rel or rel.startswith(("/", "\\")) or "\x00" in rel:
        raise OutsideRun(f"{rel!r}: not a path inside the run directory")
    path = (base / rel).resolve()
    if path != base and not path.is_relative_to(base):
        raise OutsideRun(f"{rel!r}: outside the run directory")
    return path


@dataclass
class RunDir:
    """A run directory: a pipeline run, a teacher run (a rationale store), or a folder of them."""

    root: Path

    def __post_init__(self) -> None:
        self.root = Path(self.root).resolve()
        if not self.root.is_dir():
            raise FileNotFoundError(f"{self.root}: not a directory")

    def rel(self, path: Path) -> str:
        """The path relative to RUN_DIR, '/'-separated ('.' for RUN_DIR itself)."""
        return Path(path).resolve().relative_to(self.root).as_posix()

    def _walk(self) -> list[tuple[Path, list[str]]]:
        """(folder, file names) of every folder down to MAX_DEPTH, in a stable order."""
        out = []
        for top, dirs, files in os.walk(self.root):
            depth = len(Path(top).relative_to(self.root).parts)
            dirs[:] = sorted(
                d
                for d in dirs
                if depth < MAX_DEPTH and not d.startswith(".") and not d.startswith(_SKIP_DIRS)
            )
            out.append((Path(top), sorted(files)))
        return out

    def stores(self) -> list[Path]:
        """Rationale stores (manifest.json + records.jsonl), teacher runs first."""
        found = [d for d, files in self._walk() if MANIFEST_FILE in files and RECORDS_FILE in files]

        def order(d: Path) -> tuple[int, str]:
            name = self.rel(d)
            return (0 if name == "." or name.startswith("teacher_") else 1, name)

        return sorted(found, key=order)

    def results(self) -> dict | None:
        """RUN_DIR/results.json, None when the run has none (yet)."""
        path = self.root / "results.json"
        return read_json(path) if path.is_file() else None

    def metrics_files(self) -> list[Path]:
        return [d / "metrics.jsonl" for d, files in self._walk() if "metrics.jsonl" in files]

    def plots(self) -> list[Path]:
        return [d / f for d, files in self._walk() for f in files if f.endswith(PLOT_SUFFIXES)]

    def predictions(self) -> list[tuple[str, Path]]:
        """(step folder, predictions_*.jsonl) of every evaluation."""
        return [
            (d.name, d / f)
            for d, files in self._walk()
            for f in files
            if f.startswith("predictions") and f.endswith(".jsonl")
        ]

    def selections(self) -> list[Path]:
        """Folders a selection wrote (decisions.jsonl, summary.json, report.md)."""
        return [d for d, files in self._walk() if "decisions.jsonl" in files]

    def selections_of(self, store: Path) -> list[Path]:
        """The selections made from this store: a pipeline's select_* stores name their source
        ("selection of teacher_<key>"); a selection's own store carries its decisions."""
        step = store.resolve().parent
        out = []
        for sel in self.selections():
            if sel == step:
                out.append(sel)
                continue
            manifest = sel / "store" / MANIFEST_FILE
            source = read_json(manifest).get("source") if manifest.is_file() else None
            if source == f"selection of {step.name}":
                out.append(sel)
        return out
