"""The pipeline's flags are generated from its config dataclasses: one flag per setting, named
after its field, its help the field's comment, its default the field's."""

from __future__ import annotations

import argparse
import dataclasses
from dataclasses import dataclass, field
from typing import Literal

import pytest

from scicot_jax.pipeline import cli, flags
from scicot_jax.pipeline.config import PipelineConfig


def _names(cls: type, prefix: str = "") -> list[str]:
    out = []
    for f in dataclasses.fields(cls):
        if dataclasses.is_dataclass(f.default):
            out += _names(type(f.default), f"{prefix}{f.name}.")
        else:
            out.append(prefix + f.name)
    return out


def test_every_setting_has_one_flag_of_its_name_with_help_and_default(capsys):
    run = next(a for a in cli._parser()._actions if isinstance(a, argparse._SubParsersAction))
    actions = {a.dest: a for a in run.choices["run"]._actions}
    settings = [n for n in _names(PipelineConfig) if n not in cli.NOT_FLAGS]
    assert len(settings) > 50
    for name in settings:
        a = actions[name]  # the flag's dest is the setting's dotted name
        assert a.option_strings == [f"--{name}"], name
        assert a.help.strip() and not a.help.startswith("(default"), f"{name}: no comment"
        if name not in ("task", "out"):
            assert "(default: " in a.help, name
    assert set(actions) - set(settings) == {"help", "config", "preset", "redo", "verbose"}


@dataclass(frozen=True)
class Inner:
    """A nested config."""

    rate: float = 0.5  # a rate
    # the mode,
    # over two lines
    mode: Literal["a", "b"] = "a"


@dataclass(frozen=True)
class Outer:
    """A config with every kind of field."""

    name: str  # required
    size: int | None = None  # none allowed
    on: bool = False  # a switch
    items: tuple[str, ...] = ("x",)  # a list
    table: dict = field(default_factory=lambda: {"k": 1})  # a dict
    inner: Inner = Inner(rate=0.25)  # the inner part


def _parse(*argv: str) -> argparse.Namespace:
    p = argparse.ArgumentParser()
    flags.add_flags(p, Outer)
    return p.parse_args(argv)


def test_values_by_field_type():
    args = _parse(
        "--name", "n", "--size", "none", "--on", "--items", "a,{'b': 1, 'c': 2}", "--items",
        "d", "--table", "j=[1, 2]", "--table", "s=text", "--inner.rate", "2", "--inner.mode", "b",
    )  # fmt: skip
    top = flags.given(args, Outer)
    assert top == {
        "name": "n",
        "size": None,
        "on": True,
        "items": ("a", "{'b': 1, 'c': 2}", "d"),
        "table": {"j": [1, 2], "s": "text"},
    }
    base = Outer(name="m", size=3)
    cfg = flags.merged(
        base, {**top, "inner": flags.merged(base.inner, flags.given(args, Inner, "inner."))}
    )
    assert cfg.table == {"k": 1, "j": [1, 2], "s": "text"}  # a dict flag sets keys
    assert cfg.inner == Inner(rate=2.0, mode="b")
    assert flags.given(_parse("--on", "false"), Outer) == {"on": False}
    assert flags.given(_parse(), Outer) == {}  # nothing given: the base stands
    for bad in (["--size", "x"], ["--on", "maybe"], ["--table", "nokey"], ["--inner.mode", "c"]):
        with pytest.raises(SystemExit):
            _parse(*bad)


def test_help_is_the_fields_comment_and_its_default():
    p = argparse.ArgumentParser()
    flags.add_flags(p, Outer)
    helps = {a.dest: a.help for a in p._actions}
    assert helps["name"] == "required"
    assert helps["size"] == "none allowed (default: none)"
    assert helps["on"] == "a switch (default: false)"
    assert helps["items"] == "a list (default: x)"
    assert helps["inner.rate"] == "a rate (default: 0.25)"  # the outer default's value
    assert helps["inner.mode"] == "the mode, over two lines (default: a)"


def test_old_spelling_names_the_new_flag():
    run = next(a for a in cli._parser()._actions if isinstance(a, argparse._SubParsersAction))
    near = lambda f: flags.nearest_flag(run.choices["run"], f)  # noqa: E731
    assert near("--batch-size") == "--student.batch_size"
    assert near("--per-question") == "--selection.per_question"
    assert near("--xyzzy") is None


def test_clip_zero_is_off():
    args = cli._parser().parse_args(
        ["run", "--task", "synthetic_mc", "--out", "o", "--student.clip_grad_norm", "0"]
    )
    assert cli.config_from_args(args).student.clip_grad_norm is None


def _doc_pipeline_commands() -> list[tuple[str, list[str]]]:
    """(file, argv after `run`) of every `run_pipeline.py run` command in README.md and docs/
    (the pipeline arguments after `--` of a `scaling_study.py run` too)."""
    import re
    import shlex
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    out = []
    for doc in [root / "README.md", *sorted((root / "docs").glob("*.md"))]:
        for block in re.findall(r"^```bash\n(.*?)^```$", doc.read_text(), re.M | re.S):
            for line in block.replace("\\\n", " ").splitlines():
                argv = shlex.split(line, comments=True)
                if "run_pipeline.py" in " ".join(argv[:3]) and "run" in argv[:4]:
                    out.append((doc.name, argv[argv.index("run") + 1 :]))
                elif "scaling_study.py" in " ".join(argv[:3]) and "--" in argv:
                    out.append((doc.name, argv[argv.index("--") + 1 :]))
    return out


def test_every_documented_pipeline_command_parses():
    commands = _doc_pipeline_commands()
    assert len(commands) >= 4 and {d for d, _ in commands} >= {"README.md", "real_data.md"}
    parser = cli._parser()
    for doc, argv in commands:
        args, unknown = parser.parse_known_args(["run", *argv, "--out", "o", "--task", "t"])
        assert not unknown, f"{doc}: {unknown}"
