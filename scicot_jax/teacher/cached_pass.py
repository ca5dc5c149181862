"""The cached pass on every core: worker processes turn the jobs the cache answers into records.

A re-run over a filled cache is CPU-bound in Python (request texts, sha256 keys, lookups, answer
parsing, JSON): one process writes ~13k zero-shot records a second on a 2-core machine. On a
large run, worker processes answer chunks of jobs from the cache through read-only connections
and send back encoded records; the run keeps its single writer, its store and the jobs left to
send. Chunk i goes to worker i mod n and answers are read in that order, so the store is the
one an in-process pass writes (tests compare them byte for byte).

The workers are fresh interpreters running `worker_main`, speaking pickles over their stdin and
stdout, not a multiprocessing pool: spawn would re-run the caller's main script in each worker
(a script calling run_teacher without a __main__ guard would recurse), and fork is unsafe in a
process holding threads and SQLite connections.
"""

from __future__ import annotations

import contextlib
import os
import pickle
import queue
import signal
import subprocess
import sys
import threading
from collections import deque
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from scicot_jax.data.cards import load_card
from scicot_jax.data.examples import Example
from scicot_jax.data.store import Key, encode_record
from scicot_jax.teacher.cache import Cache
from scicot_jax.teacher.config import RunConfig
from scicot_jax.teacher.jobs import JobRequests
from scicot_jax.teacher.protocol import GenRequest, GenResponse
from scicot_jax.teacher.report import Tally

POOL_MIN_JOBS = 20_000  # below: starting the workers (~0.5 s each) costs more than they save
MAX_WORKERS = 8  # the run's one writer and store stay in one process: more would wait on it

Chunk = list[tuple[Example, int]]


@dataclass
class Answered:
    """What the cache answers of one chunk of jobs."""

    entries: list[tuple[Key, bytes]] = field(default_factory=list)  # encoded records
    rest: list[int] = field(default_factory=list)  # places in the chunk of the jobs not answered
    hits: int = 0  # cached responses used
    truncated: int = 0  # records whose rationale hit max_tokens
    tally: Tally = field(default_factory=Tally)  # the summary's counts of `entries`


class CacheReader:
    """Answers jobs from a cache alone (the run's own, or a worker's read-only connection)."""

    def __init__(self, requests: JobRequests, cache: Cache):
        self.requests, self.cache = requests, cache

    def cached_responses(
        self, chunk: list[tuple[Example, int]]
    ) -> list[tuple[GenRequest, GenResponse | None, GenRequest | None, GenResponse | None]]:
        """Per job: (first request, its cached response, step-2 request, its cached response)."""
        firsts = [self.requests.requests_for(ex, k) for ex, k in chunk]
        hits = self.cache.get_many([r.key for r in firsts])
        seconds: list[GenRequest | None] = [None] * len(firsts)
        if self.requests.cfg.prompt == "zero_shot_cot":
            for i, r in enumerate(firsts):
                if r.key in hits:
                    seconds[i] = self.requests.step2_for(r, hits[r.key])
            hits.update(self.cache.get_many([r.key for r in seconds if r is not None]))
        return [
            (r, hits.get(r.key), r2, hits.get(r2.key) if r2 is not None else None)
            for r, r2 in zip(firsts, seconds, strict=True)
        ]

    def answer(self, chunk: list[tuple[Example, int]]) -> Answered:
        """The records of the jobs the cache answers fully, encoded, and the others' places."""
        answered = Answered()
        two_step = self.requests.cfg.prompt == "zero_shot_cot"
        records = []
        for i, ((ex, k), (first, r1, _, r2)) in enumerate(
            zip(chunk, self.cached_responses(chunk), strict=True)
        ):
            if r1 is None or (two_step and r2 is None):
                answered.rest.append(i)
                continue
            answered.truncated += r1.truncated
            records.append(self.requests.record_for(ex, k, first, r1, r2))
        answered.hits = len(records) * (1 + two_step)
        answered.entries = [(r.key, encode_record(r)) for r in records]
        answered.tally.add(records)
        return answered


def pool_size(cfg: RunConfig, jobs_total: int) -> int:
    """Worker processes for a run's cached pass (1: none, the run answers in-process)."""
    if cfg.workers is not None:
        return cfg.workers
    if jobs_total < POOL_MIN_JOBS:
        return 1
    return min(MAX_WORKERS, usable_cores())


def usable_cores() -> int:
    """The cores this process may run on (its affinity on Linux, else the machine's)."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


@contextlib.contextmanager
def answered_chunks(
    reader: CacheReader, chunks: Iterable[Chunk], n: int
) -> Iterator[Iterator[tuple[Chunk, Answered]]]:
    """(chunk, what the cache answers of it), in order: in-process (n <= 1), or from n worker
    processes reading the same cache (stopped when the context exits, however the run stops)."""
    if n <= 1:
        yield ((chunk, reader.answer(chunk)) for chunk in chunks)
        return
    init = (reader.requests.cfg, reader.requests.card.path, str(reader.cache.path))
    workers = [_Worker(init) for _ in range(n)]
    try:
        yield _in_order(workers, chunks, window=2 * n)
    finally:
        for w in workers:  # all inputs end first: the workers exit side by side
            w.end_input()
        for w in workers:
            w.wait()


def _in_order(workers: list[_Worker], chunks: Iterable[Chunk], window: int) -> Iterator:
    """Chunk i to worker i mod n, `window` chunks ahead; answers in the order of the chunks."""
    pending: deque[tuple[Chunk, _Worker]] = deque()
    for i, chunk in enumerate(chunks):
        worker = workers[i % len(workers)]
        worker.send(chunk)
        pending.append((chunk, worker))
        if len(pending) >= window:
            done, by = pending.popleft()
            yield done, by.receive()
    while pending:
        done, by = pending.popleft()
        yield done, by.receive()


class _Worker:
    """One worker process: chunks go in through a thread (a full pipe never blocks the run),
    answers come out in the order the chunks went in."""

    def __init__(self, init: tuple[Any, ...]):
        # The child imports this very package (a checkout on sys.path, not only an install).
        env = dict(os.environ)
        root = str(Path(__file__).resolve().parents[2])
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [root, env.get("PYTHONPATH")]))
        self.proc = subprocess.Popen(
            [sys.executable, "-c", f"import {__name__} as m; m.worker_main()"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            env=env,
            # Its own session: a Ctrl-C or a scheduler's SIGTERM to the run's process group
            # goes to the run alone, which stops cleanly and then ends the workers' input.
            start_new_session=True,
        )
        self.inbox: queue.Queue[Any] = queue.Queue()
        self.inbox.put(init)
        self.sender = threading.Thread(target=self._send_all, name="cached-pass-send", daemon=True)
        self.sender.start()

    def _send_all(self) -> None:
        stdin = self.proc.stdin
        assert stdin is not None
        with contextlib.suppress(BrokenPipeError, OSError):  # a dead worker: receive() says so
            while (item := self.inbox.get()) is not None:
                pickle.dump(item, stdin, protocol=pickle.HIGHEST_PROTOCOL)
                stdin.flush()
            stdin.close()  # end of input: the worker exits

    def send(self, chunk: Chunk) -> None:
        self.inbox.put(chunk)

    def receive(self) -> Answered:
        try:
            answer = pickle.load(self.proc.stdout)  # type: ignore[arg-type]
        except EOFError:
            code = self.proc.wait()
            raise RuntimeError(f"cached-pass worker {self.proc.pid} exited ({code})") from None
        if isinstance(answer, str):  # the worker's error, as text (not every error pickles)
            raise RuntimeError(f"cached-pass worker {self.proc.pid}: {answer}")
        return answer

    def end_input(self) -> None:
        """No more chunks: the worker exits once it has answered those it has."""
        self.inbox.put(None)

    def wait(self) -> None:
        """Wait for the worker to exit (killed if it does not go). Answers not read by now are
        not wanted (a run stopping early): the worker's write of one ends it."""
        if self.proc.stdout is not None:
            self.proc.stdout.close()
        self.sender.join(timeout=10)
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def _serve(inp: IO[bytes], out: IO[bytes]) -> None:
    """A worker: read (run config, card, cache), then answer chunks until the input ends."""
    cfg, card, cache_path = pickle.load(inp)
    reader = CacheReader(JobRequests(cfg, load_card(card)), Cache(cache_path, readonly=True))
    while True:
        try:
            chunk = pickle.load(inp)
        except EOFError:
            return
        try:
            answer: Answered | str = reader.answer(chunk)
        except Exception as e:  # noqa: BLE001 - reported to the run, which fails with it
            answer = f"{type(e).__name__}: {e}"
        pickle.dump(answer, out, protocol=pickle.HIGHEST_PROTOCOL)
        out.flush()


def worker_main() -> None:
    """The worker process's entry point."""
    # Signals sent to every process of a job (not by process group: by cgroup, say) are the
    # run's to act on: it stops cleanly and then ends our input, which ends us (as does the
    # run's death, however it dies).
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    channel = sys.stdout.buffer
    sys.stdout = sys.stderr  # a stray print must not corrupt the answers
    try:
        _serve(sys.stdin.buffer, channel)
    except BrokenPipeError:  # the run stopped reading: it wants no more answers
        os._exit(0)  # not sys.exit: flushing the closed pipe again would fail once more
