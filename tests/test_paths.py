"""The path layer: gs:// stays a URL, local paths become absolute, and no module that handles a
user's paths (binaries, checkpoints, outputs, data cards, pipeline) calls pathlib on one."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from scicot_jax.paths import as_path, is_url

ROOT = Path(__file__).resolve().parents[1]
# Modules that take MODEL_DIR, CHECKPOINT_PATH, output dirs, vocabularies, data dirs, --out or
# converter arguments.
USER_PATH_MODULES = [
    *sorted((ROOT / "scicot_jax" / "runtime").glob("*.py")),
    *sorted((ROOT / "scicot_jax" / "checkpoints").glob("*.py")),
    *sorted((ROOT / "scicot_jax" / "train").glob("*.py")),
    ROOT / "scicot_jax" / "eval.py",
    ROOT / "scicot_jax" / "infer.py",
    ROOT / "scicot_jax" / "data" / "cards.py",
    ROOT / "scicot_jax" / "data" / "sources.py",
    ROOT / "tools" / "convert_checkpoint.py",
]
# (module, function) where pathlib is right: files that are never URLs.
ALLOWED = {
    ("scicot_jax/runtime/gin_utils.py", "_find"),  # --gin_file search in local directories
    ("scicot_jax/data/cards.py", "load_card"),  # card TOML files: local, shipped or the user's
    ("scicot_jax/data/cards.py", "parse_card"),
    ("scicot_jax/data/sources.py", "_read_tfds"),  # TFDS reads its own data_dir
    ("scicot_jax/checkpoints/hf.py", "import_hf"),  # a gs:// HF dir is copied to local disk first
}


def test_urls_stay_urls_and_local_paths_become_absolute(tmp_path, monkeypatch):
    assert str(as_path("gs://bucket/run/checkpoints")) == "gs://bucket/run/checkpoints"
    assert str(as_path("gs://bucket/run") / "train") == "gs://bucket/run/train"
    assert is_url(as_path("gs://b/x")) and not is_url(tmp_path)
    monkeypatch.chdir(tmp_path)
    assert str(as_path("m")) == str(tmp_path / "m")
    assert str(as_path(f"file://{tmp_path}/m")) == str(tmp_path / "m")


def _pathlib_calls(file: Path):
    """(function, line) of each pathlib Path(...) call not built from __file__."""
    tree = ast.parse(file.read_text())
    names = {
        a.asname or a.name
        for n in ast.walk(tree)
        if isinstance(n, ast.ImportFrom) and n.module == "pathlib"
        for a in n.names
        if a.name == "Path"
    }
    where: dict[int, str] = {}
    for fn in ast.walk(tree):
        if isinstance(fn, ast.FunctionDef | ast.AsyncFunctionDef):
            for n in ast.walk(fn):
                where.setdefault(getattr(n, "lineno", -1), fn.name)
    for n in ast.walk(tree):
        if isinstance(n, ast.Call) and isinstance(n.func, ast.Name) and n.func.id in names:
            if "__file__" not in ast.unparse(n) and "sys.prefix" not in ast.unparse(n):
                yield where.get(n.lineno, "<module>"), n.lineno


@pytest.mark.parametrize("file", USER_PATH_MODULES, ids=lambda p: str(p.relative_to(ROOT)))
def test_no_pathlib_on_user_paths(file):
    rel = str(file.relative_to(ROOT))
    bad = [
        f"{rel}:{line} in {fn}()" for fn, line in _pathlib_calls(file) if (rel, fn) not in ALLOWED
    ]
    assert not bad, f"pathlib.Path on a possibly gs:// path (use scicot_jax.paths.as_path): {bad}"
