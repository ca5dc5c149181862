"""Teacher tool benchmark: rate-limit accuracy, cached re-run speed, memory at 100k-10M records.

  .venv/bin/python bench/teacher.py                # rate, leases, cached, memory, structures, resume
  .venv/bin/python bench/teacher.py --parts rate   # one part
  .venv/bin/python bench/teacher.py --parts cached --baseline REV   # before (REV: a git revision) / after
  .venv/bin/python bench/teacher.py --parts cached --cached 10000000 --prompts answer_conditioned
      # the 10M-record point for real: a 10M-request cache (24 min to fill here, ~9 GB), re-run

1. rate: the oracle answers with 20-50 ms latency; the client is limited to --rpm requests/min.
   Achieved requests/s, measured at the server between its first and last request, should be
   >= 98% of the limit (and never above it): printed per limit as a percentage.
2. leases: each sent online request takes two lease transactions in the cache (take the
   lease; renew it with the run's counters just before the send). Timed alone (--leases CACHED
   SENT: over a cache of CACHED other responses, SENT requests), then the whole sending path per
   request (an online run of SENT requests to an instant backend), and the lease share of it.
3. cached: a run whose every request is in the cache (a new run directory over a cache filled
   directly with 1M requests): records/s through cache lookup, answer parsing and durable
   appends, for zero-shot CoT (2 requests a record: 500k records) and answer-conditioned (1:
   1M records), each in a fresh process (with its peak RSS, and its cached-pass workers': one
   per core, --workers). Reported per wall second and per CPU second (the run's and its
   workers'), with the load average: the machine is shared, so wall rates move with the other
   tenants' load. With --baseline REV the same runs go through the code of git revision REV
   too (same input, alternating; each tree reads a cache filled by its own code, as the cache
   format may differ), and the ratio is printed: before/after at the same moment. The target:
   >= 20k records/s.
4. memory: peak RSS of a fresh process running N requests (an instant in-process backend, so
   only the tool's own cost is measured) for N = 100k and 1M: flat means the two are close.
5. resume: the 10M-record point, simulated: a run directory holding N finished records is
   written first, then a fresh process resumes the run over the same N examples (every job is
   found in the store; nothing is sent). Peak RSS covers the store's key index (8 B/record), the
   input scan and the job walk.
6. structures: the same per-record structures at 1M and 10M without the JSON work around them
   (minutes instead of an hour on a loaded 2-core machine): scan hashes, key index with a job
   walk, summary marks, through the functions the run uses.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

# BENCH_TREE: the source tree to measure (a --baseline checkout), else this one.
sys.path.insert(0, os.environ.get("BENCH_TREE") or str(Path(__file__).resolve().parents[1]))

from scicot_jax.data.examples import Example  # noqa: E402
from scicot_jax.data.synthetic import generate  # noqa: E402
from scicot_jax.teacher import run_teacher  # noqa: E402
from scicot_jax.teacher.cache import Cache  # noqa: E402
from scicot_jax.teacher.fakes.httpserver import FaultConfig  # noqa: E402
from scicot_jax.teacher.fakes.oracle_server import OracleServer  # noqa: E402
from scicot_jax.teacher.protocol import GenRequest, GenResponse  # noqa: E402
from scicot_jax.teacher.runner import RunConfig, TeacherRun  # noqa: E402


class TimedOracle(OracleServer):
    """The oracle, noting when each request arrives."""

    def __init__(self, **kw):
        super().__init__(**kw)
        self.arrivals: list[float] = []

    def serve_post(self, h, route, model, body):  # type: ignore[no-untyped-def]
        self.arrivals.append(time.monotonic())
        super().serve_post(h, route, model, body)


class InstantBackend:
    """Answers at once: isolates the tool's own costs (cache, limiter, parsing, store)."""

    provider = "openai-chat"

    REPLY = GenResponse(" 1 + 2 = 3. Therefore, the answer is 3.", "stop", 40, 12)

    async def generate(self, req: GenRequest) -> GenResponse:
        await asyncio.sleep(0)
        return self.REPLY

    async def aclose(self) -> None:
        pass


class ChildPeaks(threading.Thread):
    """Samples the peak RSS (VmHWM) of this process's children every 0.1 s: the cached pass's
    workers. Not ru_maxrss of the reaped children: a child started by vfork + exec starts its
    ru_maxrss at the parent's peak."""

    def __init__(self) -> None:
        super().__init__(daemon=True)
        self.peak_kb, self.stopped = 0, threading.Event()

    def run(self) -> None:
        me = str(os.getpid())
        while not self.stopped.wait(0.1):
            for pid in filter(str.isdigit, os.listdir("/proc")):
                try:
                    if Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1] != me:
                        continue
                    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                        if line.startswith("VmHWM:"):
                            self.peak_kb = max(self.peak_kb, int(line.split()[1]))
                except (OSError, IndexError):
                    continue

    def stop(self) -> float | None:
        """The largest child peak seen, in MB (None: no child was seen)."""
        self.stopped.set()
        self.join()
        return round(self.peak_kb / 1024, 1) if self.peak_kb else None


def peak_rss_mb() -> float:
    """This process's peak resident memory (MB) since its exec: VmHWM. Not ru_maxrss, which
    Linux carries over an exec from the forking parent (a child of a 300 MB bench reports 300
    MB however little it uses)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def bench_rate(rpm: float, seconds: float, tmp: Path) -> dict:
    n = int(rpm / 60 * seconds)
    srv = TimedOracle(faults=FaultConfig(latency_s=(0.020, 0.050)), log_requests=False).start()
    try:
        exs = generate("arithmetic", "train", n=n, difficulty=2)
        t = time.monotonic()
        s = run_teacher(
            exs,
            card="synthetic_arithmetic",
            backend="openai",
            model="oracle",
            prompt="answer_conditioned",
            samples=1,
            temperature=0.0,
            cache_path=str(tmp / f"rate{rpm}.sqlite"),
            out_dir=str(tmp / f"r{rpm}"),
            base_url=srv.url,
            rpm=rpm,
            concurrency=32,
        )
        wall = time.monotonic() - t
    finally:
        srv.close()
    a = sorted(srv.arrivals)
    server_rps = (len(a) - 1) / (a[-1] - a[0])
    limit = rpm / 60
    return {
        "rpm_limit": rpm,
        "requests": s["sent"],
        "latency_ms": "20-50",
        "achieved_rps": round(server_rps, 2),
        "limit_rps": round(limit, 2),
        "achieved_pct_of_limit": round(100 * server_rps / limit, 2),
        "max_in_any_60s_window": _max_window(a, 60.0),
        "wall_rps_incl_setup": round(s["sent"] / wall, 2),
        "status": s["status"],
    }


def _max_window(times: list[float], width: float) -> int:
    """The most arrivals in any window (t - width, t]: what a provider's sliding minute sees."""
    best, j = 0, 0
    for i, t in enumerate(times):
        while times[j] <= t - width:
            j += 1
        best = max(best, i - j + 1)
    return best


def _synthetic_source(n: int):
    """n distinct examples, generated on the fly (nothing materialised)."""

    def gen():
        for i in range(n):
            yield Example(f"q{i}", f"Ann has {i} pens and buys 3 more. How many pens?", str(i + 3))

    return gen


def _fill_cache(run: TeacherRun) -> float:
    """Put every request of the run in its cache directly: what a finished run leaves behind."""
    reply, ok = InstantBackend.REPLY, []
    t = time.monotonic()
    with Cache(run.cache_path) as cache:
        for ex in run.source():
            first = run.requests.requests_for(ex, 0)
            ok.append((first, reply))
            if run.cfg.prompt == "zero_shot_cot":
                ok.append((run.requests.step2_for(first, reply), reply))
            if len(ok) >= 20_000:
                cache.write_batch(ok, [])
                ok = []
        cache.write_batch(ok, [])
    return time.monotonic() - t


def _cached_cfg(prompt: str) -> RunConfig:
    return RunConfig(
        backend="openai",
        model="bench",
        prompt=prompt,
        samples=1,
        temperature=0.0,
        progress=False,
        concurrency=32,
    )


def cached_child(n: int, prompt: str, cache: str, out: str, workers: str) -> None:
    """A new run directory over a cache holding all of its requests: rate, CPU and peak RSS
    (the run's process, and the largest of its cached-pass worker processes)."""
    cfg = _cached_cfg(prompt)
    if workers != "auto":  # a --baseline tree may predate the setting
        cfg.workers = int(workers)
    run = TeacherRun(
        cfg, "synthetic_arithmetic", _synthetic_source(n), cache, out, backend=InstantBackend()
    )
    load = os.getloadavg()[0]
    children = ChildPeaks()
    children.start()
    t, before = time.monotonic(), os.times()
    s = asyncio.run(run.run())
    wall, after = time.monotonic() - t, os.times()
    workers_peak = children.stop()
    cpu_main = after.user + after.system - before.user - before.system
    cpu_workers = (
        after.children_user + after.children_system - before.children_user - before.children_system
    )
    assert s["sent"] == 0 and s["written"] == n, s
    peak = peak_rss_mb()
    print(
        json.dumps(
            {
                "records_per_s": round(n / wall, 1),
                "records_per_cpu_s": round(n / (cpu_main + cpu_workers), 1),
                "seconds": round(wall, 1),
                "cpu_s_run": round(cpu_main, 1),
                "cpu_s_workers": round(cpu_workers, 1),
                "workers": getattr(cfg, "workers", None) or "auto",
                "peak_rss_mb": round(peak, 1),
                "worker_peak_rss_mb": workers_peak,
                "load_avg_1m": round((load + os.getloadavg()[0]) / 2, 2),
            }
        )
    )


def _checkout(rev: str, tmp: Path) -> Path:
    """The source tree of git revision `rev` (for --baseline), unpacked under tmp."""
    root, dest = Path(__file__).resolve().parents[1], tmp / f"tree-{rev}"
    dest.mkdir()
    archive = subprocess.run(
        ["git", "-C", str(root), "archive", rev, "scicot_jax", "tasks"],
        capture_output=True,
        check=True,
    ).stdout
    subprocess.run(["tar", "-x", "-C", str(dest)], input=archive, check=True)
    return dest


def fill_cached_child(n: int, prompt: str, cache: str) -> None:
    """Fill `cache` with every request of the n-record run, in this tree's cache format."""
    run = TeacherRun(_cached_cfg(prompt), "synthetic_arithmetic", _synthetic_source(n), cache, ".")
    print(json.dumps({"fill_s": round(_fill_cache(run), 1)}))


def bench_cached(
    n: int, tmp: Path, prompt: str, baseline: Path | None, rounds: int, workers: str
) -> dict:
    trees = {"this": None, "baseline": baseline} if baseline else {"this": None}
    caches, fill_s = {}, {}
    for name, tree in trees.items():  # each tree's own cache: the two may differ in schema
        caches[name] = tmp / f"cached-{prompt}-{name}.sqlite"
        fill_s[name] = _child("--fill-cached-child", str(n), prompt, str(caches[name]), tree=tree)
    runs: dict[str, list[dict]] = {name: [] for name in trees}
    for r in range(rounds):
        for name, tree in reversed(trees.items()) if r % 2 else trees.items():
            out = tmp / f"again-{prompt}-{name}-{r}"
            runs[name].append(
                _child(
                    "--cached-child",
                    str(n),
                    prompt,
                    str(caches[name]),
                    str(out),
                    workers,
                    tree=tree,
                )
            )
            shutil.rmtree(out)
    best = {name: max(rs, key=lambda x: x["records_per_s"]) for name, rs in runs.items()}
    out = {
        "records": n,
        "prompt": prompt,
        "requests": n * (2 if prompt == "zero_shot_cot" else 1),
        **{f"{k}": v for k, v in best["this"].items()},
        "runs": runs["this"],
        "cache_fill_s": fill_s["this"]["fill_s"],
    }
    if baseline:
        b = best["baseline"]
        out["baseline"] = {**b, "runs": runs["baseline"]}
        out["speedup_wall"] = round(best["this"]["records_per_s"] / b["records_per_s"], 2)
        out["speedup_cpu"] = round(best["this"]["records_per_cpu_s"] / b["records_per_cpu_s"], 2)
    return out


def _run_for(n: int, tmp: str) -> TeacherRun:
    cfg = RunConfig(
        backend="openai",
        model="bench",
        prompt="answer_conditioned",
        samples=1,
        progress=False,
        concurrency=32,
    )
    return TeacherRun(
        cfg,
        "synthetic_arithmetic",
        _synthetic_source(n),
        Path(tmp) / "m.sqlite",
        Path(tmp) / "m",
        backend=InstantBackend(),
    )


def memory_child(n: int, tmp: str) -> None:
    """Run (or resume) n jobs in this fresh process and print its peak RSS."""
    run = _run_for(n, tmp)
    base = peak_rss_mb()
    t = time.monotonic()
    s = asyncio.run(run.run())
    peak = peak_rss_mb()
    print(
        json.dumps(
            {
                "records": n,
                "requests_sent": s["sent"],
                "jobs_skipped": s["jobs_skipped"],
                "peak_rss_mb": round(peak, 1),
                "rss_before_run_mb": round(base, 1),
                "run_bytes_per_record": round((peak - base) * 2**20 / n, 1),
                "seconds": round(time.monotonic() - t, 1),
                "load_avg_1m": round(os.getloadavg()[0], 2),
            }
        )
    )


def leases_child(n: int, m: int, tmp: str) -> None:
    """Each sent online request takes two lease transactions (take, then renew with the
    counters just before the send): timed alone over a cache of n other responses, then the
    whole sending path per request (an online run of m requests to an instant backend)."""
    other = TeacherRun(
        _cached_cfg("answer_conditioned"),
        "synthetic_arithmetic",
        lambda: (Example(f"p{i}", f"Bob has {i} cups. How many?", str(i)) for i in range(n)),
        Path(tmp) / "m.sqlite",
        tmp,
    )
    _fill_cache(other)  # the lease's lookups walk B-trees of a realistic size
    run = _run_for(m, tmp)
    keys = [run.requests.requests_for(ex, 0).key for ex in run.source()]
    holder = f"bench:{os.getpid()}:leases"
    with Cache(run.cache_path) as cache:
        t, cpu = time.monotonic(), time.process_time()
        for key in keys:
            assert cache.lease(key, holder, 60.0) == "leased"
            assert cache.lease(key, holder, 60.0, run.counters) == "leased"
        wall, cpu = time.monotonic() - t, time.process_time() - cpu
        cache.release_leases(holder)
    t, run_cpu = time.monotonic(), time.process_time()
    s = asyncio.run(run.run())
    run_wall, run_cpu = time.monotonic() - t, time.process_time() - run_cpu
    assert s["sent"] == m, s
    print(
        json.dumps(
            {
                "cached_responses": n,
                "requests": m,
                "lease_pair_us_wall": round(wall / m * 1e6, 1),
                "lease_pair_us_cpu": round(cpu / m * 1e6, 1),
                "run_us_per_sent_request_wall": round(run_wall / m * 1e6, 1),
                "run_us_per_sent_request_cpu": round(run_cpu / m * 1e6, 1),
                "lease_share_of_run_cpu": round(cpu / run_cpu, 3),
                "load_avg_1m": round(os.getloadavg()[0], 2),
            }
        )
    )


def fill_child(n: int, tmp: str) -> None:
    """Write a run directory holding n finished records for `_run_for(n)` (fast, no requests)."""
    from scicot_jax.data.store import RationaleStore

    run = _run_for(n, tmp)
    store = RationaleStore.create(run.out_dir, run.manifest.new())
    line = (
        '{{"answer": "{a}", "correct": true, "example_id": "q{i}", "extra": {{}}, '
        '"input_tokens": 40, "output_tokens": 12, "prompt_kind": "answer_conditioned", '
        '"rationale": "{i} + 3 = {a}. Therefore, the answer is {a}.", "sample_index": 0, '
        '"source": "teacher:bench", "split": "train", "temperature": 0.0}}\n'
    )
    with open(store.records_path, "a", encoding="ascii") as f:
        for i in range(n):
            f.write(line.format(i=i, a=i + 3))


def structures_child(n: int) -> None:
    """The per-record structures of an n-record resumed run, through the run's own functions,
    in the order the run holds them: input scan, store key index (+ job walk), summary."""
    from array import array

    from scicot_jax.data.key_index import KeyIndex, key_hash, sorted_duplicates
    from scicot_jax.teacher.inputs import duplicate_hashes, id_hash
    from scicot_jax.teacher.report import _MASK, _kept_per_question

    base = peak_rss_mb()
    t = time.monotonic()
    ids = array("Q", (id_hash(f"q{i}") for i in range(n)))  # RunManifest.scan
    assert not duplicate_hashes(ids)
    del ids
    hashes = array("Q", (key_hash(f"q{i}", 0) for i in range(n)))  # RationaleStore open
    assert not sorted_duplicates(hashes)
    index = KeyIndex(hashes)
    assert all((f"q{i}", 0) in index for i in range(0, n, max(1, n // 100_000)))  # job walk
    index_mb = index.nbytes() / 2**20
    del index, hashes  # release_index() before the summary
    marks = array("Q", (((id_hash(f"q{i}") << 1) & _MASK) | (i % 3 > 0) for i in range(n)))
    questions, hist = _kept_per_question(marks)  # accuracy_summary
    assert questions == n and sum(hist.values()) == n
    peak = peak_rss_mb()
    print(
        json.dumps(
            {
                "records": n,
                "simulated": "structures only: scan hashes, key index, summary marks",
                "peak_rss_mb": round(peak, 1),
                "rss_before_mb": round(base, 1),
                "key_index_mb": round(index_mb, 1),
                "bytes_per_record_above_start": round((peak - base) * 2**20 / n, 1),
                "seconds": round(time.monotonic() - t, 1),
                "load_avg_1m": round(os.getloadavg()[0], 2),
            }
        )
    )


def _child(*args: str, tree: Path | None = None) -> dict:
    env = {**os.environ, "BENCH_TREE": str(tree)} if tree else None
    p = subprocess.run(
        [sys.executable, __file__, *args], capture_output=True, text=True, check=True, env=env
    )
    return json.loads(p.stdout.strip().splitlines()[-1]) if p.stdout.strip() else {}


def bench_memory(sizes: list[int]) -> list[dict]:
    out = []
    for n in sizes:
        with tempfile.TemporaryDirectory() as tmp:
            out.append(_child("--memory-child", str(n), tmp))
    return out


def bench_resume(n: int) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        t = time.monotonic()
        _child("--fill-child", str(n), tmp)
        fill_s = time.monotonic() - t
        out = _child("--memory-child", str(n), tmp)
    assert out["jobs_skipped"] == n and out["requests_sent"] == 0, out
    return {**out, "simulated": "resume over a pre-written store", "fill_s": round(fill_s, 1)}


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument(
        "--parts",
        nargs="+",
        default=["rate", "leases", "cached", "memory", "structures", "resume"],
    )
    ap.add_argument("--rpm", type=float, nargs="+", default=[1200.0, 6000.0])
    ap.add_argument(
        "--seconds", type=float, default=75.0, help="length of each rate run (> 60: a full minute)"
    )
    ap.add_argument("--cached", type=int, default=1_000_000, help="requests in each cached re-run")
    ap.add_argument("--baseline", help="git revision to measure the cached re-runs against")
    ap.add_argument("--rounds", type=int, default=1, help="cached runs per tree (best kept)")
    ap.add_argument(
        "--workers",
        default="auto",
        help="cached: the runs' --workers (auto: the tool's default; 1: no worker processes)",
    )
    ap.add_argument(
        "--prompts", nargs="+", default=["zero_shot_cot", "answer_conditioned"], help="cached"
    )
    ap.add_argument("--memory", type=int, nargs="+", default=[100_000, 1_000_000])
    ap.add_argument("--resume", type=int, default=10_000_000, help="records in the resume part")
    ap.add_argument(
        "--leases", type=int, nargs=2, default=[100_000, 20_000], metavar=("CACHED", "SENT")
    )
    ap.add_argument("--memory-child", nargs=2, metavar=("N", "TMP"), help=argparse.SUPPRESS)
    ap.add_argument("--leases-child", nargs=3, help=argparse.SUPPRESS)
    ap.add_argument("--fill-child", nargs=2, metavar=("N", "TMP"), help=argparse.SUPPRESS)
    ap.add_argument("--cached-child", nargs=5, help=argparse.SUPPRESS)
    ap.add_argument("--fill-cached-child", nargs=3, help=argparse.SUPPRESS)
    ap.add_argument("--structures-child", metavar="N", help=argparse.SUPPRESS)
    ap.add_argument(
        "--structures", type=int, nargs="+", default=[1_000_000, 10_000_000], help="records"
    )
    args = ap.parse_args()
    if args.memory_child:
        memory_child(int(args.memory_child[0]), args.memory_child[1])
        return
    if args.cached_child:
        n, prompt, cache, out, workers = args.cached_child
        cached_child(int(n), prompt, cache, out, workers)
        return
    if args.leases_child:
        leases_child(int(args.leases_child[0]), int(args.leases_child[1]), args.leases_child[2])
        return
    if args.fill_cached_child:
        n, prompt, cache = args.fill_cached_child
        fill_cached_child(int(n), prompt, cache)
        return
    if args.structures_child:
        structures_child(int(args.structures_child))
        return
    if args.fill_child:
        fill_child(int(args.fill_child[0]), args.fill_child[1])
        return
    results: dict = {}
    with tempfile.TemporaryDirectory() as tmp:
        if "rate" in args.parts:
            results["rate"] = [bench_rate(r, args.seconds, Path(tmp)) for r in args.rpm]
            print(json.dumps(results["rate"], indent=2), flush=True)
        if "cached" in args.parts:
            base = _checkout(args.baseline, Path(tmp)) if args.baseline else None
            results["cached"] = []
            for p in args.prompts:
                n = args.cached // (2 if p == "zero_shot_cot" else 1)  # records for the requests
                results["cached"].append(
                    bench_cached(n, Path(tmp), p, base, args.rounds, args.workers)
                )
                print(json.dumps(results["cached"][-1], indent=2), flush=True)
    if "leases" in args.parts:
        with tempfile.TemporaryDirectory() as tmp:
            results["leases"] = _child("--leases-child", *map(str, args.leases), tmp)
        print(json.dumps(results["leases"], indent=2), flush=True)
    if "memory" in args.parts:
        results["memory"] = bench_memory(args.memory)
        print(json.dumps(results["memory"], indent=2), flush=True)
    if "structures" in args.parts:
        results["structures"] = [_child("--structures-child", str(n)) for n in args.structures]
        print(json.dumps(results["structures"], indent=2), flush=True)
    if "resume" in args.parts:
        results["resume"] = bench_resume(args.resume)
        print(json.dumps(results["resume"], indent=2), flush=True)
    for r in results.get("rate", []):
        ok = r["achieved_pct_of_limit"] >= 98 and r["max_in_any_60s_window"] <= r["rpm_limit"]
        print(
            f"online rate at --rpm {r['rpm_limit']:g}: {r['achieved_pct_of_limit']}% of the limit,"
            f" at most {r['max_in_any_60s_window']} requests in any 60 s"
            f" (target >= 98%, never above: {'met' if ok else 'MISSED'})"
        )
    if results.get("leases"):
        x = results["leases"]
        print(
            f"lease transactions per sent online request: {x['lease_pair_us_wall']} us wall,"
            f" {x['lease_pair_us_cpu']} us CPU (of {x['run_us_per_sent_request_cpu']} us CPU on"
            f" the whole sending path: {100 * x['lease_share_of_run_cpu']:.0f}%),"
            f" load {x['load_avg_1m']}"
        )
    for c in results.get("cached", []):
        ok = c["records_per_s"] >= 20_000
        print(
            f"cached re-run, {c['prompt']}, {c['requests']} requests: {c['records_per_s']:.0f}"
            f" records/s (target >= 20k: {'met' if ok else 'MISSED'}),"
            f" {c['records_per_cpu_s']:.0f} records/CPU-s (run and workers), peak RSS"
            f" {c['peak_rss_mb']} MB (largest worker {c['worker_peak_rss_mb']} MB),"
            f" load {c['load_avg_1m']}"
            + (
                f"; x{c['speedup_wall']} wall, x{c['speedup_cpu']} CPU vs --baseline"
                if "baseline" in c
                else ""
            )
        )


if __name__ == "__main__":
    main()
