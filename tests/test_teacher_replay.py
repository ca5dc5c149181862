"""Replay of Fine-tune-CoT's recorded text-davinci-002 completions: the paper's SVAMP 64.20."""

from __future__ import annotations

import json

from scicot_jax.teacher import start_replay_server
from scicot_jax.teacher.cli import main


def test_replay_reproduces_svamp_teacher_accuracy(tmp_path, capsys, shared_data):
    data = shared_data / "finetune_cot"
    srv = start_replay_server(data)
    correct = records = 0
    try:
        for split in ("train", "test"):  # the paper's figure is over all samples
            out = tmp_path / split
            code = main(
                [
                    "run",
                    "--task",
                    "ftcot_svamp",
                    "--split",
                    split,
                    "--backend",
                    "openai",
                    "--api",
                    "completions",
                    "--base-url",
                    srv.url,
                    "--model",
                    "text-davinci-002",
                    "--prompt",
                    "zero_shot_cot",
                    "--samples",
                    "1",
                    "--temperature",
                    "0",
                    "--max-tokens",
                    "128",
                    "--answer-max-tokens",
                    "128",
                    "--cache",
                    str(tmp_path / "c.sqlite"),
                    "--out",
                    str(out),
                    "--concurrency",
                    "16",
                    "--no-progress",
                ]
            )
            assert code == 0, capsys.readouterr().err
            capsys.readouterr()
            assert main(["report", str(out)]) == 0
            rep = json.loads(capsys.readouterr().out)
            assert rep["requests"]["failed"] == 0  # every prompt matched a recording exactly
            correct += rep["correct"]
            records += rep["records"]
    finally:
        srv.close()
    assert records == 1000
    assert round(100 * correct / records, 2) == 64.20


def test_standalone_replay_gives_sample_k_its_kth_recording(tmp_path):
    """A question recorded several times: sample k gets recording k whatever its seed (the
    client's X-Sample-Index), and a request without one gets the first (the greedy sample), as
    in the pipeline; never `seed % len(recordings)`."""
    import asyncio

    import httpx

    from scicot_jax.teacher.backends import OpenAIBackend
    from scicot_jax.teacher.protocol import GenRequest

    samples = [{"prompt": "Q: flip?\nA:", "completion": f" take {k}"} for k in range(3)]
    (tmp_path / "D_toy.json").write_text(json.dumps({"data": {"0": samples}}))
    srv = start_replay_server(tmp_path / "D_toy.json", log_requests=False)

    async def sample(k: int, seed: int) -> str:
        backend = OpenAIBackend("completions", base_url=srv.url)
        try:
            req = GenRequest("openai-completions", "m", "Q: flip?\nA:", 0.7, 8, seed, k)
            return (await backend.generate(req)).text
        finally:
            await backend.aclose()

    try:
        for k, seed in ((0, 5), (1, 7), (2, 4)):  # seed % 3 would give 2, 1, 1
            assert asyncio.run(sample(k, seed)) == f" take {k}"
        body = {"model": "m", "prompt": "Q: flip?\nA:", "temperature": 0, "seed": 5}
        r = httpx.post(f"{srv.url}/v1/completions", json=body)
        assert r.json()["choices"][0]["text"] == " take 0"
    finally:
        srv.close()


def test_standalone_replay_coin_flip_agrees_with_the_pipeline(tmp_path, capsys, shared_data):
    """`serve-replay` + `run` on coin flip (questions recorded more than once): 314 of the 350
    train questions right, as the pipeline's replay teacher gives (README), not 313."""
    srv = start_replay_server(shared_data / "finetune_cot" / "completions" / "D_coin_flip.json")
    try:
        code = main(
            ["run", "--task", "ftcot_coin_flip", "--data-dir", str(shared_data / "finetune_cot"),
             "--split", "train", "--backend", "openai", "--api", "completions", "--base-url",
             srv.url, "--model", "text-davinci-002", "--prompt", "zero_shot_cot", "--samples",
             "1", "--temperature", "0", "--max-tokens", "128", "--answer-max-tokens", "128",
             "--cache", str(tmp_path / "c.sqlite"), "--out", str(tmp_path / "run"),
             "--concurrency", "16", "--no-progress"]
        )  # fmt: skip
        assert code == 0, capsys.readouterr().err
        capsys.readouterr()
        assert main(["report", str(tmp_path / "run")]) == 0
        rep = json.loads(capsys.readouterr().out)
    finally:
        srv.close()
    assert (rep["correct"], rep["records"]) == (314, 350)
