"""Every configurable, parameter and macro in gin/t5x/**/*.gin exists in upstream t5x.

t5x is not installable here, so its names come from tests/t5x_names.toml (read from t5x's
source, each with where it came from); seqio's come from the installed seqio. Files are parsed
with gin's own parser, includes followed as t5x's binaries would (`--gin_search_paths=gin/t5x`).
"""

from __future__ import annotations

import inspect
import re
import tomllib
from pathlib import Path

import pytest

from gin import config_parser as cp

ROOT = Path(__file__).resolve().parents[1]
GIN_T5X = ROOT / "gin" / "t5x"
NAMES = tomllib.loads((Path(__file__).parent / "t5x_names.toml").read_text())
CONFIGURABLES: dict[str, list[str]] = {k: v["params"] for k, v in NAMES["configurables"].items()}
RUN_FILES: dict[str, dict] = NAMES["includes"]
# What every t5x binary's run file reads: a model file must work under each of them.
READ_BY_ANY_BINARY = set.intersection(*(set(f["reads"]) for f in RUN_FILES.values()))


class _Refs(cp.ParserDelegate):
    """Collects the `@configurable` references and `%MACRO`s of the statement being parsed."""

    def __init__(self) -> None:
        self.refs: list[str] = []
        self.macros: list[str] = []

    def configurable_reference(self, scoped_configurable_name, evaluate):
        self.refs.append(scoped_configurable_name.rsplit("/", 1)[-1])
        return scoped_configurable_name

    def macro(self, macro_name):
        self.macros.append(macro_name)
        return macro_name


class _Chain:
    """A gin file with its gin/t5x includes: names used, macros set and read, t5x run files."""

    def __init__(self) -> None:
        self.problems: list[str] = []
        self.sets: dict[str, str] = {}  # macro -> "file:line" of its last assignment
        self.reads: dict[str, str] = {}  # macro -> "file:line" of its first read
        self.run_files: list[str] = []

    def parse(self, path: Path) -> None:
        where = _shown(path)
        refs = _Refs()
        aliases: dict[str, str] = {}
        for st in cp.ConfigParser(path.read_text(), refs):
            at = f"{where}:{st.location.line_num}"
            if isinstance(st, cp.IncludeStatement):
                self._include(st.filename, at)
            elif isinstance(st, cp.ImportStatement):
                if st.module != "__gin__.dynamic_registration":
                    aliases[st.bound_name()] = st.module
            elif isinstance(st, cp.BindingStatement) and not st.arg_name:
                self.sets[st.selector] = at
            elif isinstance(st, cp.BindingStatement):
                self._check(st.selector, st.arg_name, aliases, at)
            for ref in refs.refs:
                self._check(ref, None, aliases, at)
            for macro in refs.macros:
                self.reads.setdefault(macro, at)
            refs.refs.clear()
            refs.macros.clear()

    def _include(self, name: str, at: str) -> None:
        if name in RUN_FILES:
            self.run_files.append(name)
            self.sets.update(dict.fromkeys(RUN_FILES[name]["sets"], name))
            for macro in RUN_FILES[name]["reads"]:
                self.reads.setdefault(macro, name)
        elif (GIN_T5X / name).is_file():
            self.parse(GIN_T5X / name)
        else:
            self.problems.append(f"{at}: include {name!r} is neither in gin/t5x nor t5x's runs")

    def _resolve(self, selector: str, aliases: dict[str, str]) -> str:
        head, _, rest = selector.partition(".")
        module = aliases.get(head, head)
        if module == "__main__":  # the binary that runs the included t5x run file
            binaries = {RUN_FILES[f]["binary"] for f in self.run_files}
            module = binaries.pop() if len(binaries) == 1 else "__main__"
        return f"{module}.{rest}"

    def _check(self, selector: str, param: str | None, aliases: dict[str, str], at: str) -> None:
        name = self._resolve(selector, aliases)
        known = _seqio_params(name) if name.startswith("seqio.") else CONFIGURABLES.get(name)
        if known is None:
            self.problems.append(f"{at}: {name} is not a t5x/seqio configurable")
        elif param is not None and param not in known:
            self.problems.append(f"{at}: {name} has no parameter {param!r} (it has {known})")


def _seqio_params(name: str) -> list[str] | None:
    """Parameters of a seqio callable (the installed seqio), or None if seqio lacks it."""
    import seqio

    obj = seqio
    for part in name.split(".")[1:]:
        obj = getattr(obj, part, None)
        if obj is None:
            return None
    return list(inspect.signature(obj).parameters)


def _shown(path: Path) -> str:
    return str(path.relative_to(ROOT)) if path.is_relative_to(ROOT) else str(path)


def problems(path: Path) -> list[str]:
    """Each name in the gin file (with its includes) that t5x or seqio lacks: 'file:line: ...'."""
    chain = _Chain()
    chain.parse(path)
    out = chain.problems
    reads = set(chain.reads) if chain.run_files else set(chain.reads) | READ_BY_ANY_BINARY
    for macro, at in chain.sets.items():
        if macro not in reads and at not in RUN_FILES:
            out.append(f"{at}: macro {macro} is set but nothing reads it")
    for macro, at in chain.reads.items():
        if macro not in chain.sets and macro != "gin.REQUIRED":
            out.append(f"{at}: macro {macro} is read but never set")
    if chain.run_files:  # the opening command names the binary the recipe is for
        binary = RUN_FILES[chain.run_files[-1]]["binary"]
        if not re.search(rf"^#.*python -m {re.escape(binary)}\b", path.read_text(), re.M):
            out.append(f"{_shown(path)}: its command should be `python -m {binary}`")
    return out


T5X_GIN_FILES = sorted(GIN_T5X.rglob("*.gin"))


def test_every_gin_t5x_file_is_checked():
    names = {str(p.relative_to(GIN_T5X)) for p in T5X_GIN_FILES}
    assert {"models/small.gin", "runs/eval.gin", "runs/infer_sample.gin"} <= names
    assert {"scicot/baseline.gin", "scicot/stage1.gin", "scicot/stage2.gin"} <= names


@pytest.mark.parametrize("path", T5X_GIN_FILES, ids=lambda p: str(p.relative_to(GIN_T5X)))
def test_gin_t5x_names_exist_in_t5x(path):
    assert problems(path) == []


@pytest.mark.parametrize(
    "text, expected",
    [
        ("utils.DatasetConfig.shufle = False", "DatasetConfig has no parameter 'shufle'"),
        ("utils.DataConfig.split = 'test'", "t5x.utils.DataConfig is not a t5x/seqio configurable"),
        ("seqio.SentencePieceVocabulary.extra_idz = 0", "no parameter 'extra_idz'"),
        ("BATCH_SIZES = 8", "macro BATCH_SIZES is set but nothing reads it"),
        ("utils.DatasetConfig.seed = %SEEDZ", "macro SEEDZ is read but never set"),
        ("include 't5x/configs/runs/evaluate.gin'", "neither in gin/t5x nor t5x's runs"),
        ("eval_script.infer.mode = 'score'", "t5x.eval.infer is not a t5x/seqio configurable"),
    ],
)
def test_a_wrong_name_is_reported_with_file_and_line(tmp_path, text, expected):
    """The check fails on each kind of mistake, naming the file and line."""
    bad = tmp_path / "bad.gin"
    bad.write_text((GIN_T5X / "runs" / "eval.gin").read_text() + f"{text}\n")
    line = len(bad.read_text().splitlines())
    found = problems(bad)
    assert len(found) == 1 and found[0].startswith(f"{bad}:{line}: ") and expected in found[0], (
        found
    )
