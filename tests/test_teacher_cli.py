"""The command line: keys never on disk, bad input, dry run, report, review, serve-oracle."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from scicot_jax.data.store import RationaleStore
from scicot_jax.data.synthetic import generate
from scicot_jax.teacher import start_oracle_server
from scicot_jax.teacher.cli import main

ROOT = Path(__file__).resolve().parents[1]
SECRET = "sk-test-DO-NOT-LEAK-4f1e9c"


@pytest.fixture
def oracle():
    srv = start_oracle_server()
    yield srv
    srv.close()


def _input(tmp_path: Path, n: int = 4, task: str = "mc_reasoning") -> Path:
    f = tmp_path / "in.jsonl"
    with open(f, "w") as fh:
        for ex in generate(task, "train", n=n):
            fh.write(
                json.dumps(
                    {
                        "id": ex.id,
                        "question": ex.question,
                        "answer": ex.answer,
                        "choices": [list(c) for c in ex.choices],
                    }
                )
                + "\n"
            )
    return f


def _run_args(srv, tmp_path, backend="openai", out="run", *extra):
    return [
        "run",
        "--task",
        "synthetic_mc",
        "--input",
        str(_input(tmp_path)),
        "--backend",
        backend,
        "--base-url",
        srv.url,
        "--model",
        "oracle",
        "--prompt",
        "zero_shot_cot",
        "--samples",
        "2",
        "--temperature",
        "0.7",
        "--cache",
        str(tmp_path / "c.sqlite"),
        "--out",
        str(tmp_path / out),
        "--no-progress",
        *extra,
    ]


def test_api_keys_never_reach_disk_or_output(tmp_path):
    # Faults make error messages (which go to the cache's failures table) part of the check.
    srv = start_oracle_server(script=["500", "429", "drop"], retry_after_s=0.05)
    env = {**os.environ, "OPENAI_API_KEY": SECRET, "GEMINI_API_KEY": SECRET}
    env.pop("GOOGLE_API_KEY", None)
    outputs = []
    try:
        for backend in ("openai", "gemini"):
            p = subprocess.run(
                [
                    sys.executable,
                    str(ROOT / "tools/query_teacher.py"),
                    *_run_args(srv, tmp_path, backend, f"run_{backend}"),
                    "--max-retries",
                    "1",
                ],
                cwd=ROOT,
                env=env,
                capture_output=True,
                timeout=120,
            )
            outputs.append(p.stdout + p.stderr)
            assert p.returncode in (0, 1), p.stderr.decode()[-2000:]
        assert srv.stats()["counts"]["with_api_key"] >= 16  # the key was sent, as a header
    finally:
        srv.close()
    leaked = [
        str(f) for f in tmp_path.rglob("*") if f.is_file() and SECRET.encode() in f.read_bytes()
    ]
    assert not leaked
    assert all(SECRET.encode() not in o for o in outputs)
    assert (tmp_path / "c.sqlite").exists() and (tmp_path / "run_gemini/records.jsonl").exists()


def test_bad_input_lines_exit_2_naming_file_and_line(tmp_path, capsys, oracle):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"id": "a", "question": "q?", "answer": "1"}\n{"id": "b", "question": ""}\n')
    code = main(
        [
            "run",
            "--task",
            "synthetic_arithmetic",
            "--input",
            str(bad),
            "--backend",
            "openai",
            "--base-url",
            oracle.url,
            "--model",
            "oracle",
            "--prompt",
            "zero_shot_cot",
            "--cache",
            str(tmp_path / "c.sqlite"),
            "--out",
            str(tmp_path / "run"),
        ]
    )
    assert code == 2
    assert f"{bad}:2: field 'question' missing or empty" in capsys.readouterr().err
    assert sum(oracle.received().values()) == 0 and not (tmp_path / "run").exists()


def test_duplicate_ids_are_refused_before_sending(tmp_path, capsys, oracle):
    f = tmp_path / "dup.jsonl"
    f.write_text(
        "".join(
            json.dumps({"id": i, "question": f"Q{i}?", "answer": "1"}) + "\n"
            for i in ("a", "b", "a")
        )
    )
    code = main(
        [
            "run",
            "--task",
            "synthetic_arithmetic",
            "--input",
            str(f),
            "--backend",
            "openai",
            "--base-url",
            oracle.url,
            "--model",
            "oracle",
            "--prompt",
            "zero_shot_cot",
            "--cache",
            str(tmp_path / "c.sqlite"),
            "--out",
            str(tmp_path / "run"),
        ]
    )
    assert code == 2 and f"{f}:3: field 'id': 'a' repeats {f}:1" in capsys.readouterr().err
    assert sum(oracle.received().values()) == 0
    # The Python API (no input file) refuses them too, naming the ids.
    from scicot_jax.data.examples import Example
    from scicot_jax.teacher import run_teacher

    exs = [Example(i, f"Q{i}?", "1") for i in ("a", "b", "a")]
    with pytest.raises(ValueError, match=r"duplicate example id\(s\) in the input: \['a'\]"):
        run_teacher(
            exs,
            card="synthetic_arithmetic",
            backend="openai",
            model="oracle",
            prompt="zero_shot_cot",
            samples=1,
            temperature=0.0,
            base_url=oracle.url,
            cache_path=str(tmp_path / "c.sqlite"),
            out_dir=str(tmp_path / "run2"),
        )
    assert sum(oracle.received().values()) == 0


def test_dry_run_quotes_and_sends_nothing(tmp_path, capsys, oracle):
    assert (
        main(
            _run_args(
                oracle,
                tmp_path,
                "openai",
                "run",
                "--dry-run",
                "--price-in",
                "1",
                "--price-out",
                "2",
            )
        )
        == 0
    )
    quote = json.loads(capsys.readouterr().out)
    assert quote["jobs"] == 8 and quote["requests_to_send"] == 16
    assert quote["est_cost_usd_upper"] > 0
    assert sum(oracle.received().values()) == 0 and not (tmp_path / "run").exists()
    assert (
        main(
            _run_args(
                oracle, tmp_path, "openai", "run", "--max-requests", "5", "--concurrency", "1"
            )
        )
        == 3
    )
    capsys.readouterr()
    assert main(_run_args(oracle, tmp_path, "openai", "run", "--dry-run")) == 0
    quote = json.loads(capsys.readouterr().out)
    assert quote["already_done"] == 2 and quote["cached_requests"] == 1
    assert quote["requests_to_send"] == 16 - 5


def test_report_export_and_apply_review(tmp_path, capsys, oracle):
    assert main(_run_args(oracle, tmp_path)) == 0
    capsys.readouterr()
    assert main(["report", str(tmp_path / "run")]) == 0
    rep = json.loads(capsys.readouterr().out)
    assert rep["records"] == 8 and rep["teacher_accuracy"] == 100.0
    assert rep["requests"]["sent"] == 16 and rep["unparseable_answers"] == 0
    assert rep["kept_samples_per_question"]["histogram"] == {"2": 4}
    assert main(["export", str(tmp_path / "run")]) == 0
    review = Path(capsys.readouterr().out.strip())
    rows = [json.loads(line) for line in review.read_text().splitlines()]
    assert all(r["decision"] == "keep" and "Answer Choices" in r["question"] for r in rows)
    rows[0]["decision"] = "drop"
    rows[1]["decision"] = "edit"
    rows[1]["rationale"] = "Cleaned by hand. Therefore, the answer is A."
    review.write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert (
        main(["apply-review", str(tmp_path / "run"), str(review), "--out", str(tmp_path / "clean")])
        == 0
    )
    res = json.loads(capsys.readouterr().out)
    assert (res["keep"], res["drop"], res["edit"], res["records"]) == (6, 1, 1, 7)
    clean = RationaleStore.open(tmp_path / "clean")
    edited = [r for r in clean.records() if r.extra["review"] == "edit"][0]
    assert edited.rationale.startswith("Cleaned") and edited.answer == "A"
    gold = {ex.id: ex.answer for ex in clean.examples()}[edited.example_id]
    assert edited.correct == (gold == "A")  # re-checked against the gold answer
    assert len(clean.examples()) == 4 and clean.manifest["reviewed_from"]
    rows[2]["rationale"] += " (silently changed)"
    review.write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert (
        main(
            ["apply-review", str(tmp_path / "run"), str(review), "--out", str(tmp_path / "clean2")]
        )
        == 2
    )
    assert f"{review}:3: rationale changed but decision is 'keep'" in capsys.readouterr().err


def test_resume_with_other_settings_is_refused(tmp_path, capsys, oracle):
    assert main(_run_args(oracle, tmp_path)) == 0
    args = _run_args(oracle, tmp_path)
    args[args.index("--temperature") + 1] = "0.3"
    assert main(args) == 2
    assert "other settings (['temperature'])" in capsys.readouterr().err


def test_serve_oracle_command(tmp_path):
    p = subprocess.Popen(
        [
            sys.executable,
            str(ROOT / "tools/query_teacher.py"),
            "serve-oracle",
            "--latency-ms",
            "1",
            "2",
        ],
        cwd=ROOT,
        stdout=subprocess.PIPE,
    )
    try:
        url = json.loads(p.stdout.readline())["url"]
        ex = generate("coin_flip", "test", n=1)[0]
        r = httpx.post(
            f"{url}/v1/completions",
            json={
                "model": "oracle",
                "prompt": f"Q: {ex.question}\nA: Let's think step by step.",
                "temperature": 0,
            },
        )
        text = r.json()["choices"][0]["text"]
        assert text.strip().endswith(f"Therefore, the answer is {ex.answer}.")
    finally:
        p.send_signal(signal.SIGTERM)
        assert p.wait(timeout=10) == 0


def test_failed_jobs_name_their_cause_and_failures_lists_them(tmp_path, capsys):
    import socket

    with socket.socket() as s:  # a port nobody listens on: every request is refused
        s.bind(("127.0.0.1", 0))
        dead = f"http://127.0.0.1:{s.getsockname()[1]}/v1"

    class Dead:
        url = dead

    code = main([*_run_args(Dead, tmp_path), "--max-retries", "0"])
    out, err = capsys.readouterr()
    summary = json.loads(out)
    assert code == 1 and summary["status"] in ("failures", "failing")
    cause = next(iter(summary["failure_causes"]))
    assert cause == "connection: ConnectError", summary["failure_causes"]
    if summary["status"] == "failures":
        assert cause in err and "scicot-teacher failures" in err
    for where in (tmp_path / "c.sqlite", tmp_path / "run"):
        assert main(["failures", str(where), "--limit", "2"]) == 0
        lines = capsys.readouterr().out.splitlines()
        assert len(lines) == 3 and all(cause in line for line in lines)
        assert lines[-1].startswith(f"{sum(summary['failure_causes'].values())} failed request")
