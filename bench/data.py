"""Packing density and input-pipeline throughput: SeqIO's packer (before) vs best-fit (after).

    .venv/bin/python bench/data.py                          # every workload, packers side by side
    .venv/bin/python bench/data.py --workloads compass_d4 --train 300

Each workload is a registered SeqIO one_stage task read through the trainer's own feed
(`seqio_feed.train_batches`): synthetic ARC-form MC with D=1 and D=10 rationales, the demo's
synthetic_compass with D=4 oracle rationales, and, when ../shared/data is present, multi-CoT
SVAMP (10 real rationales per question) and CQA with PaLM rationales (real vocabularies are task
BPE models of 1024 pieces, as the pipeline trains). Per workload it prints density (real
tokens / token slots over inputs + targets) and real tokens/s for: SeqIO's packer at the card's
lengths (before), best-fit at the card's lengths, and best-fit at lengths fitted to the data
(`packing.fit_lengths`) within each `--row_tokens` budget ("card" = the card's inputs+targets).
Rates and densities exclude the first `packing_window` rows (start-up: the packer's window
filling with fresh examples, also SeqIO's shuffle buffer). Lengths are fitted to the whole train
split: a row of 20 examples wastes about the error of its inputs:targets ratio, and the first
examples of a locally shuffled stream can be off by several percent.

`--train N` also trains a tiny T5 on the compass workload twice, same seed, same token slots per
step: unpacked (one example per row at the card's lengths, batch 16) and packed (best-fit into
rows of 4x the card's tokens, lengths fitted to the data, batch 4). It prints real tokens/s and
the steps and training seconds each needs to reach the validation loss the unpacked run ends at.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

SHARED = Path(__file__).resolve().parents[1] / "../shared/data"

CARD = """
name = "bench_mc"
answer_type = "multiple_choice"
[source]
type = "synthetic"
task = "mc_reasoning"
difficulty = 4
sizes = {{ train = {n}, validation = 8, test = 8 }}
[splits]
train = "train"
validation = "validation"
test = "test"
[feature_lengths]
inputs = {inputs}
targets = {targets}
"""


def synthetic_run(tmp: Path, card_path: Path | str, task: str, degree: int, name: str) -> Path:
    """A rationale run with `degree` oracle rationales per train question of a synthetic card."""
    from scicot_jax.data import synthetic
    from scicot_jax.data.cards import load_card
    from scicot_jax.data.sources import read_examples
    from scicot_jax.data.store import RationaleRecord, RationaleStore

    card = load_card(card_path)
    run_dir = tmp / f"run_{name}"
    store = RationaleStore.create(run_dir, {"card": str(card_path), "teacher": "oracle"})
    store.extend(
        RationaleRecord(
            ex.id,
            i,
            synthetic.write_rationale(task, ex, i),
            ex.answer,
            True,
            "teacher:oracle",
            "zero_shot_cot",
            0.7,
        )  # fmt: skip
        for ex in read_examples(card, "train")
        for i in range(degree)
    )
    store.close()
    return run_dir


def imported_run(tmp: Path, importer: str) -> tuple[Path, str]:
    """(run dir, task vocabulary path) of a real recorded-rationale import."""
    from scicot_jax.data import importers
    from scicot_jax.pipeline import vocab_step

    run = (
        importers.svamp_multi_cot()
        if importer == "svamp_multi_cot"
        else importers.distill_step_by_step("cqa", splits=["train"])
    )
    run_dir = tmp / f"run_{importer}"
    importers.write_run(run, run_dir)
    texts = vocab_step.corpus(run.examples, [r.rationale for r in run.records])
    return run_dir, str(vocab_step.train(run_dir, texts, 1024))


def register(tmp: Path, workload: str, n_mc: int) -> tuple[str, dict[str, int]]:
    """(one_stage task name, card feature lengths) of a workload, registered with SeqIO."""
    from scicot_jax import tasks
    from scicot_jax.data.cards import load_card

    if workload.startswith("mc_d"):
        degree = int(workload[4:])
        card_path = tmp / "bench_mc.toml"
        if not card_path.exists():
            card_path.write_text(CARD.format(n=n_mc, inputs=256, targets=256))
        run, vocab = synthetic_run(tmp, card_path, "mc_reasoning", degree, workload), "demo"
        card_name = "bench_mc"
    elif workload == "compass_d4":
        card_path = "synthetic_compass"
        run, vocab, degree = synthetic_run(tmp, card_path, "compass", 4, workload), "demo", 4
        card_name = "synthetic_compass"
    else:
        run, vocab = imported_run(tmp, workload)
        card_name = {"svamp_multi_cot": "svamp_multi_cot", "cqa_palm": "commonsense_qa"}[workload]
        degree = None
    tasks.register_run_dir(
        run,
        name=workload,
        vocabulary=vocab,
        methods=["one_stage"],
        degrees=[degree] if degree else [],
    )
    name = tasks.task_name(card_name, "one_stage", workload, degree)
    return name, dict(
        load_card(card_name if card_name != "bench_mc" else card_path).feature_lengths
    )


def sample_examples(task: str, cap: int, n: int) -> list[dict]:
    """The first n shuffled train examples (inputs/targets tokens, truncated at cap)."""
    import seqio

    ds = seqio.get_mixture_or_task(task).get_dataset(
        {"inputs": cap, "targets": cap}, split="train", shuffle=True, seed=0, num_epochs=1
    )
    out = []
    for ex in ds.take(n).as_numpy_iterator():
        out.append({"inputs": ex["inputs"], "targets": ex["targets"]})
    return out


def measure(task: str, lengths: dict, batch_size: int, batches: int, packer: str) -> dict:
    """Density and rates of `batches` batches from the trainer's feed, after start-up."""
    from scicot_jax.data.seqio_feed import DatasetConfig, train_batches

    cfg = DatasetConfig(task, dict(lengths), batch_size=batch_size, seed=0, packer=packer)
    it = train_batches(cfg)(0)
    for _ in range(-(-cfg.packing_window // batch_size)):  # start-up: the window filling
        next(it)
    t0 = time.perf_counter()
    real = slots = examples = 0
    for _ in range(batches):
        b = next(it)
        real += int(
            (b["encoder_input_tokens"] != 0).sum() + (b["decoder_target_tokens"] != 0).sum()
        )
        slots += b["encoder_input_tokens"].size + b["decoder_target_tokens"].size
        examples += int((b["decoder_target_tokens"] == 1).sum())  # one EOS per example
    dt = time.perf_counter() - t0
    return {
        "density": real / slots,
        "real_tokens_per_s": real / dt,
        "slot_tokens_per_s": slots / dt,
        "examples_per_row": examples / (batches * batch_size),
    }


def report(workload: str, label: str, lengths: dict, r: dict, base: dict | None) -> None:
    vs = ""
    if base is not None:
        vs = (
            f" | density x{r['density'] / base['density']:.2f}, "
            f"real tok/s x{r['real_tokens_per_s'] / base['real_tokens_per_s']:.2f}"
        )
    print(
        f"{workload:<16} {label:<22} {lengths['inputs']:>4}/{lengths['targets']:<4} "
        f"density {r['density']:.3f} ({r['examples_per_row']:.1f} ex/row) "
        f"real {r['real_tokens_per_s']:>9,.0f} tok/s slot {r['slot_tokens_per_s']:>9,.0f}"
        f"{r['spread']}{vs}",
        flush=True,
    )


def train_effect(task: str, card_lengths: dict, sizes, steps: int, batch: int, tmp: Path):
    """Same seed and token slots per step: unpacked at the card's lengths vs best-fit packed
    rows of 4x the card's tokens (fitted lengths, a quarter of the rows), tiny T5."""
    import json

    import numpy as np

    from scicot_jax.data import packing, synthetic
    from scicot_jax.data.cards import load_card
    from scicot_jax.data.formats import one_stage
    from scicot_jax.data.seqio_feed import DatasetConfig, train_batches
    from scicot_jax.data.sources import read_examples
    from scicot_jax.data.vocab import get_vocabulary
    from scicot_jax.model import T5Config
    from scicot_jax.pipeline.plan import TokenizedPairs
    from scicot_jax.train.configs import CheckpointConfig
    from scicot_jax.train.optimizers import OptimizerConfig
    from scicot_jax.train.trainer import TrainConfig, train

    card = load_card("synthetic_compass")
    val = [
        one_stage(ex, synthetic.write_rationale("compass", ex, 0))
        for ex in read_examples(card, "validation")
    ]
    model = T5Config.preset("tiny", vocab_size=512, dtype="float32", dropout_rate=0.0)
    pairs = TokenizedPairs(get_vocabulary("demo"), model, val, *card_lengths.values())
    val_batches = [
        pairs.batch(np.arange(i, i + batch)) for i in range(0, len(pairs) - batch + 1, batch)
    ]
    packed_lengths = packing.fit_lengths(sizes, 4 * sum(card_lengths.values()))
    period = max(1, steps // 12)
    runs = {}
    for name, lengths, rows, pack in (
        ("unpacked", card_lengths, batch, False),
        ("packed", packed_lengths, batch // 4, True),
    ):
        data = DatasetConfig(task, dict(lengths), batch_size=rows, seed=0, pack=pack)
        feed = train_batches(data)
        probe = [b for _, b in zip(range(20), feed(0))]
        real_per_step = float(np.mean([
            (b["encoder_input_tokens"] != 0).sum() + (b["decoder_target_tokens"] != 0).sum()
            for b in probe
        ]))  # fmt: skip
        spans: list[tuple[int, float, float]] = []  # per eval: step, start, end (wall clock)
        starts: list[float] = []

        def evals(_starts=starts):
            _starts.append(time.perf_counter())
            return iter(val_batches)

        def eval_end(step, params, _spans=spans, _starts=starts):
            _spans.append((step, _starts[-1], time.perf_counter()))
            return {}

        tc = TrainConfig(
            model_dir=str(tmp / f"train_{name}"), train_steps=steps, model=model,
            feature_lengths=dict(lengths), optimizer=OptimizerConfig(name="adafactor", learning_rate=3e-3),
            seed=0, checkpoint=CheckpointConfig(period=steps, keep=1, async_save=False),
            log_period=period, eval_period=period, handle_sigterm=False,
        )  # fmt: skip
        train(tc, feed, eval_batches=evals, eval_fn=eval_end)
        lines = (Path(tc.model_dir) / "eval" / "metrics.jsonl").read_text().splitlines()
        losses = {int(r["step"]): float(r["loss"]) for r in map(json.loads, lines)}
        # Training seconds since the first eval (compilation before it), evals left out.
        train_s, elapsed = {spans[0][0]: 0.0}, 0.0
        for (_, _, prev_end), (step, start, _) in zip(spans, spans[1:]):
            elapsed += start - prev_end
            train_s[step] = elapsed
        first, last = spans[0][0], spans[-1][0]
        rate = real_per_step * (last - first) / max(elapsed, 1e-9)
        density = real_per_step / (rows * sum(lengths.values()))
        runs[name] = dict(
            losses=losses, train_s=train_s, rate=rate, first=first, lengths=lengths, rows=rows,
            density=density, real_per_step=real_per_step,
        )  # fmt: skip
    target = runs["unpacked"]["losses"][max(runs["unpacked"]["losses"])]
    print(
        f"train: tiny T5, {steps} steps, seed 0, {batch * sum(card_lengths.values())} token "
        f"slots per step; target = the unpacked run's final validation loss {target:.4f}; "
        f"seconds of training after step {runs['unpacked']['first']}"
    )
    for name, r in runs.items():
        hit = next((s for s in sorted(r["losses"]) if r["losses"][s] <= target), None)
        when = f"step {hit} ({r['train_s'].get(hit, 0.0):.1f} s)" if hit else "not reached"
        print(
            f"  {name:<9} {r['rows']} x {r['lengths']['inputs']}/{r['lengths']['targets']}: "
            f"density {r['density']:.3f}, {r['real_per_step']:,.0f} real tokens/step, real "
            f"{r['rate']:,.0f} tok/s, final val loss {r['losses'][max(r['losses'])]:.4f}, "
            f"target reached at {when}",
            flush=True,
        )


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--workloads", default="mc_d1,mc_d10,compass_d4,svamp_multi_cot,cqa_palm")
    ap.add_argument(
        "--examples", type=int, default=2200, help="synthetic MC questions (ARC-Easy ~2.25k)"
    )
    ap.add_argument("--batch_size", type=int, default=64)
    ap.add_argument("--batches", type=int, default=60, help="timed batches per measurement")
    ap.add_argument("--row_tokens", default="card,2048", help="budgets for fitted lengths")
    ap.add_argument("--repeats", type=int, default=1, help="repeat each measurement (median shown)")
    ap.add_argument("--train", type=int, default=0, help="steps of the compass train comparison")
    a = ap.parse_args(argv)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    from scicot_jax.data import packing

    print(f"batch={a.batch_size} batches={a.batches} cpus={os.cpu_count()}")
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        for workload in a.workloads.split(","):
            if workload in ("svamp_multi_cot", "cqa_palm") and not SHARED.is_dir():
                print(f"{workload}: skipped ({SHARED} absent)")
                continue
            task, card_lengths = register(tmp, workload, a.examples)
            sample = sample_examples(task, 4096, 50_000)  # the whole split
            fitted = {}
            for budget in a.row_tokens.split(","):
                total = sum(card_lengths.values()) if budget == "card" else int(budget)
                fitted[budget] = packing.fit_lengths(packing.sizes_of(sample), total)
            cases = [
                ("before: seqio", "seqio", card_lengths),
                ("after: best_fit", "best_fit", card_lengths),
            ]
            cases += [(f"after: best_fit@{b}", "best_fit", L) for b, L in fitted.items()]
            base = None
            for label, packer, lengths in cases:
                rs = [
                    measure(task, lengths, a.batch_size, a.batches, packer)
                    for _ in range(a.repeats)
                ]
                r = {k: statistics.median(x[k] for x in rs) for k in rs[0]}
                rates = [x["real_tokens_per_s"] for x in rs]
                r["spread"] = f" [real {min(rates):,.0f}..{max(rates):,.0f} over {len(rs)}]"
                report(workload, label, lengths, r, base)
                base = base or r
            if a.train and workload == "compass_d4":
                train_effect(task, card_lengths, packing.sizes_of(sample), a.train, 16, tmp)


if __name__ == "__main__":
    main()
