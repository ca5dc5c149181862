"""API keys: a key with whitespace or control characters is a configuration error that never
echoes it, and a key echoed anywhere in an error body reaches no file and no output."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from scicot_jax.data.synthetic import generate
from scicot_jax.teacher import start_oracle_server
from scicot_jax.teacher.backends import scrub
from scicot_jax.teacher.cli import main

ROOT = Path(__file__).resolve().parents[1]
KEY = "sk-test-Zq8Xw3Lp0Rt7Vb2Nm6Yc4Hd9Jf1Kg5Ps"  # 39 characters, like a Gemini key
OFFSETS = 601  # the server puts the key at body offsets 0, 1, ..., 600


def _pieces(text: bytes | str, n: int = 8) -> list[str]:
    """Every n-character piece of KEY found in text."""
    s = text.decode("utf-8", "replace") if isinstance(text, bytes) else text
    return sorted({KEY[i : i + n] for i in range(len(KEY) - n + 1) if KEY[i : i + n] in s})


def _input(path: Path, n: int) -> Path:
    with open(path, "w") as fh:
        for ex in generate("mc_reasoning", "train", n=n):
            row = {"id": ex.id, "question": ex.question, "answer": ex.answer}
            fh.write(json.dumps(dict(row, choices=[list(c) for c in ex.choices])) + "\n")
    return path


def _args(url: str, tmp_path: Path, backend: str, n: int) -> list[str]:
    return [
        "run",
        "--task",
        "synthetic_mc",
        "--input",
        str(_input(tmp_path / f"in_{n}.jsonl", n)),
        "--backend",
        backend,
        "--base-url",
        url,
        "--model",
        "oracle",
        "--prompt",
        "answer_conditioned",
        "--samples",
        "2",
        "--cache",
        str(tmp_path / "c.sqlite"),
        "--out",
        str(tmp_path / f"run_{backend}"),
        "--no-progress",
        "--max-retries",
        "0",
    ]


def test_scrub_removes_escaped_quoted_and_partial_forms_before_cutting():
    for offset in range(0, 600):
        body = "." * offset + KEY + " " + json.dumps(KEY) + " " + KEY[5:17] + "." * 50
        assert not _pieces(scrub(body, KEY, 500)), offset
    weird = 'sk-"quoted"\\key/+=&?1234'
    for form in (json.dumps(weird), repr(weird), "sk-%22quoted%22%5Ckey%2F%2B%3D%26%3F1234"):
        assert "quoted" not in scrub(f"error: {form} rejected", weird)
    assert scrub("nothing secret here", KEY) == "nothing secret here"


@pytest.mark.parametrize("bad", [KEY + "\n", KEY + "\r\n", " " + KEY, KEY[:10] + "\t" + KEY[10:]])
def test_key_with_whitespace_is_a_fatal_config_error_that_never_echoes_it(
    tmp_path, capsys, monkeypatch, bad
):
    srv = start_oracle_server()
    monkeypatch.setenv("OPENAI_API_KEY", bad)
    try:
        code = main(_args(srv.url, tmp_path, "openai", 2))
        assert sum(srv.stats()["counts"].values()) == 0  # nothing was sent
    finally:
        srv.close()
    out = capsys.readouterr()
    assert code == 2
    assert "OPENAI_API_KEY contains whitespace or control characters" in out.err
    assert len(out.err.strip().splitlines()) == 1 and not _pieces(out.out + out.err)
    assert not (tmp_path / "run_openai").exists() and not (tmp_path / "c.sqlite").exists()


def test_key_echoed_at_every_offset_is_found_nowhere(tmp_path):
    env = {**os.environ, "OPENAI_API_KEY": KEY, "GEMINI_API_KEY": KEY}
    env.pop("GOOGLE_API_KEY", None)
    outputs = []
    for backend in ("openai", "gemini"):
        # Every other request is a 400 echoing the key (so the run never stops as "failing").
        srv = start_oracle_server(script=["echo_key", "ok"] * OFFSETS)
        try:
            p = subprocess.run(
                [
                    sys.executable,
                    "-m",
                    "scicot_jax.teacher.cli",
                    *_args(srv.url, tmp_path, backend, OFFSETS),
                ],
                cwd=ROOT,
                env=env,
                capture_output=True,
                timeout=300,
            )
            assert srv.stats()["counts"]["fault:echo_key"] == OFFSETS
        finally:
            srv.close()
        assert p.returncode == 1, p.stderr.decode()[-2000:]  # some jobs failed
        outputs.append(p.stdout + p.stderr)
    files = [f for f in tmp_path.rglob("*") if f.is_file()]
    assert any(f.name == "c.sqlite" for f in files)
    leaked = {str(f): _pieces(f.read_bytes()) for f in files if _pieces(f.read_bytes())}
    assert not leaked
    assert not any(_pieces(o) for o in outputs)
