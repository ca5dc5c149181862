"""Every expected failure of the teacher tool is one stderr line with a documented non-zero
exit code, no traceback, and nothing written: numeric arguments, unusable paths, busy runs."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from scicot_jax.data.synthetic import generate
from scicot_jax.teacher import start_oracle_server
from scicot_jax.teacher.cli import main

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def oracle():
    srv = start_oracle_server()
    yield srv
    srv.close()


def _input(tmp_path: Path, n: int = 3) -> Path:
    f = tmp_path / "in.jsonl"
    with open(f, "w") as fh:
        for ex in generate("arithmetic", "train", n=n):
            fh.write(json.dumps({"id": ex.id, "question": ex.question, "answer": ex.answer}) + "\n")
    return f


def _args(tmp_path: Path, url: str, *extra: str, inp: Path | None = None) -> list[str]:
    return [
        *("run", "--task", "synthetic_arithmetic", "--input", str(inp or _input(tmp_path))),
        *("--backend", "openai", "--base-url", url, "--model", "oracle"),
        *("--prompt", "answer_conditioned", "--no-progress"),
        *("--cache", str(tmp_path / "c.sqlite"), "--out", str(tmp_path / "run")),
        *extra,
    ]


def _one_line(capsys, code: int, *words: str) -> str:
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in err, err
    for w in words:
        assert w in lines[0], lines[0]
    return lines[0]


BAD_NUMBERS = [
    ("--temperature", "-1"),
    ("--temperature", "nan"),
    ("--temperature", "inf"),
    ("--answer-temperature", "-0.5"),
    ("--max-tokens", "-5"),
    ("--max-tokens", "0"),
    ("--answer-max-tokens", "0"),
    ("--timeout", "0"),
    ("--timeout", "nan"),
    ("--limit", "-1"),
    ("--limit", "0"),
    ("--concurrency", "-4"),
    ("--concurrency", "0"),
    ("--rpm", "-5"),
    ("--tpm", "nan"),
    ("--max-retries", "-1"),
    ("--max-cost", "-1"),
    ("--max-requests", "0"),
    ("--price-in", "-2"),
    ("--samples", "0"),
]


@pytest.mark.parametrize(("flag", "value"), BAD_NUMBERS)
def test_bad_numbers_are_refused_before_anything_is_written(tmp_path, capsys, oracle, flag, value):
    before = sum(oracle.received().values())
    assert main(_args(tmp_path, oracle.url, flag, value)) == 2
    _one_line(capsys, 2, flag)
    assert not (tmp_path / "run").exists() and not (tmp_path / "c.sqlite").exists()
    assert sum(oracle.received().values()) == before


def test_unparseable_number_is_one_line(tmp_path):
    p = subprocess.run(
        [
            sys.executable,
            "-m",
            "scicot_jax.teacher.cli",
            *_args(tmp_path, "http://x", "--temperature", "warm"),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert p.returncode == 2 and len(p.stderr.strip().splitlines()) == 1, p.stderr
    assert "--temperature" in p.stderr


@pytest.mark.parametrize("dry_run", [False, True])
@pytest.mark.parametrize("kind", ["directory", "not_sqlite"])
def test_unusable_cache_is_one_line_and_no_run_dir(tmp_path, capsys, oracle, kind, dry_run):
    cache = tmp_path / "c.sqlite"
    if kind == "directory":
        cache.mkdir()
    else:
        cache.write_text("this is not a database\n" * 100)
    assert main(_args(tmp_path, oracle.url, *(["--dry-run"] if dry_run else []))) == 2
    _one_line(capsys, 2, str(cache))
    assert not (tmp_path / "run").exists()


def test_input_that_is_a_directory_is_one_line(tmp_path, capsys, oracle):
    (tmp_path / "indir").mkdir()
    assert main(_args(tmp_path, oracle.url, inp=tmp_path / "indir")) == 2
    _one_line(capsys, 2, "indir")
    assert not (tmp_path / "run").exists()


def test_busy_run_dir_is_one_line(tmp_path, capsys, oracle):
    from scicot_jax.teacher.runner import _lock

    (tmp_path / "run").mkdir()
    fd = _lock(tmp_path / "run")  # as a run in progress holds it
    try:
        assert main(_args(tmp_path, oracle.url)) == 2
    finally:
        import os

        os.close(fd)
    _one_line(capsys, 2, "another teacher run is writing here")


# -- input gaps: each bad input is refused naming file, line and field, before any request ---
def _refused(tmp_path, capsys, oracle, inp: Path, *words: str, task: str = "synthetic_arithmetic"):
    before = sum(oracle.received().values())
    args = _args(tmp_path, oracle.url, inp=inp)
    args[args.index("--task") + 1] = task
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    for w in words:
        assert w in err, err
    assert not (tmp_path / "run").exists() and sum(oracle.received().values()) == before


def test_non_utf8_byte_names_file_and_line(tmp_path, capsys, oracle):
    inp = tmp_path / "latin1.jsonl"
    inp.write_bytes(
        b'{"id": "a", "question": "1+1?", "answer": "2"}\n{"id": "b", "question": "caf\xe9?", "answer": "3"}\n'
    )
    _refused(tmp_path, capsys, oracle, inp, f"{inp}:2:", "UTF-8")


def test_empty_input_is_an_error(tmp_path, capsys, oracle):
    inp = tmp_path / "empty.jsonl"
    inp.write_text("\n\n")
    _refused(tmp_path, capsys, oracle, inp, str(inp), "no examples")


def test_huge_question_is_refused(tmp_path, capsys, oracle):
    inp = tmp_path / "huge.jsonl"
    q = "How many? " + "x" * 10_000_000
    inp.write_text(json.dumps({"id": "big", "question": q, "answer": "1"}) + "\n")
    _refused(tmp_path, capsys, oracle, inp, f"{inp}:1:", "field 'question'", "characters")


def test_yes_no_card_refuses_maybe(tmp_path, capsys, oracle):
    inp = tmp_path / "yn.jsonl"
    inp.write_text(
        '{"id": "a", "question": "Heads?", "answer": "yes"}\n'
        '{"id": "b", "question": "Tails?", "answer": "maybe"}\n'
    )
    _refused(
        tmp_path, capsys, oracle, inp, f"{inp}:2:", "field 'answer'", "maybe",
        task="synthetic_coin_flip",
    )  # fmt: skip


@pytest.mark.parametrize(
    ("table", "line", "field"),
    [
        ("[source]", "difficultyy = 7", "source.difficultyy"),
        ("[feature_lengths]", "input = 64", "feature_lengths.input"),
    ],
)
def test_unknown_keys_in_card_tables_are_refused(tmp_path, capsys, oracle, table, line, field):
    from scicot_jax.data.cards import CARDS_DIR

    text = (CARDS_DIR / "synthetic_arithmetic.toml").read_text()
    assert table in text
    card = tmp_path / "card.toml"
    card.write_text(text.replace(table, f"{table}\n{line}", 1))
    _refused(tmp_path, capsys, oracle, _input(tmp_path), str(card), field, task=str(card))
