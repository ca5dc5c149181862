"""The replay teacher: serves recorded real completions (Fine-tune-CoT release format).

Each recorded sample holds a step-1 prompt and its reasoning completion, and a step-2 prompt
and its answer completion. A request is answered only if its prompt matches a recorded one
exactly; anything else is a 404, so a prompt template drifting from the paper's shows at once.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from scicot_jax.files import read_json
from scicot_jax.teacher.fakes.batch_server import BatchFaults
from scicot_jax.teacher.fakes.httpserver import FaultConfig, TeacherServer


def load_recordings(paths: Iterable[str | Path]) -> dict[str, list[tuple[str, str]]]:
    """prompt -> [(completion, finish_reason)] from D_<task>.json files or folders of them."""
    table: dict[str, list[tuple[str, str]]] = defaultdict(list)
    files: list[Path] = []
    for p in map(Path, paths):
        if p.is_dir():
            sub = p / "completions" if (p / "completions").is_dir() else p
            files += sorted(sub.glob("*.json"))
        else:
            files.append(p)
    if not files:
        raise FileNotFoundError(f"no recorded completions under {list(map(str, paths))}")
    for path in files:
        raw = read_json(path)
        data = raw.get("data") if isinstance(raw, dict) else raw
        groups = data.values() if isinstance(data, dict) else [[r] for r in data or []]
        for samples in groups:
            for s in samples if isinstance(samples, list) else [samples]:
                _add(table, s, path)
    return dict(table)


def _add(table: dict[str, list[tuple[str, str]]], s: Any, path: Path) -> None:
    if not isinstance(s, dict):
        raise ValueError(f"{path}: a sample is not a JSON object")
    pairs = [
        ("reasoning_prompt", "reasoning_completion", s.get("reasoning_finish_reason")),
        ("prompt", "completion", s.get("finish_reason")),
    ]
    for pk, ck, finish in pairs:
        if isinstance(s.get(pk), str) and isinstance(s.get(ck), str):
            entry = (s[ck], "length" if finish == "length" else "stop")
            if entry not in table[s[pk]]:
                table[s[pk]].append(entry)


class ReplayServer(TeacherServer):
    """Answers exactly-matching prompts with their recorded completions."""

    name = "replay"

    def __init__(
        self,
        recordings: dict[str, list[tuple[str, str]]],
        port: int = 0,
        *,
        faults: FaultConfig | None = None,
        log_requests: bool = True,
        batch_faults: BatchFaults | None = None,
    ):
        super().__init__(port, faults=faults, log_requests=log_requests, batch_faults=batch_faults)
        self.recordings = recordings
        # Request seed -> sample index, when the client's seeds are known (the pipeline's
        # teacher step); else the request's X-Sample-Index header, else 0. Sample k gets the
        # k-th recorded completion everywhere, so D samples are distinct and runs agree.
        self.sample_of_seed: dict[int, int] = {}

    def complete(self, prompt: str, params: dict[str, Any]) -> tuple[str, str]:
        options = self.recordings.get(prompt)
        if not options:
            raise LookupError(f"prompt not in the recording: {prompt[:120]!r}...")
        k = self.sample_of_seed.get(int(params.get("seed") or 0))
        if k is None:  # the client's sample index (X-Sample-Index); none sent: the greedy one
            k = int(params.get("sample_index") or 0)
        if k >= len(options) and float(params.get("temperature") or 0) > 0:
            raise LookupError(f"sample {k} asked, {len(options)} recorded for {prompt[:80]!r}")
        return options[min(k, len(options) - 1)]


def start_replay_server(
    data: str | Path | Iterable[str | Path],
    port: int = 0,
    *,
    latency_ms: float = 0.0,
    log_requests: bool = True,
    batch_faults: BatchFaults | None = None,
    **fault_opts: Any,
) -> ReplayServer:
    """Start a replay server over recorded completion files; `.url`, `.close()`."""
    paths = [data] if isinstance(data, str | Path) else list(data)
    faults = FaultConfig(latency_s=(latency_ms / 1000, latency_ms / 1000), **fault_opts)
    return ReplayServer(
        load_recordings(paths),
        port,
        faults=faults,
        log_requests=log_requests,
        batch_faults=batch_faults,
    ).start()
