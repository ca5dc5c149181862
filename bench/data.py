"""Input-pipeline throughput: SeqIO task -> tokenize -> EncDecFeatureConverter(pack=True) -> batches.

    .venv/bin/python bench/data.py                       # ARC-sized (2.2k) and 10x-diverse data
    .venv/bin/python bench/data.py --target 500000 --vocab t5 --lengths 512,256

Measures examples/s of the tokenized task and packed tokens/s of the converted batches, on a
synthetic ARC-form rationale run (4 choices, one rationale per question, and D=10 rationales per
question), and prints each next to the trainer-side rate it must exceed. `--target` is token
slots/s (batch x (inputs + targets) length, what the trainer counts); the default is a typical
figure for T5-small training on one H100 (~0.5M tokens/s).
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

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


def make_run(tmp: Path, n: int, degree: int, lengths: tuple[int, int]) -> Path:
    """A card with n synthetic MC questions and a teacher run with `degree` rationales each."""
    from scicot_jax.data import synthetic
    from scicot_jax.data.cards import load_card
    from scicot_jax.data.sources import read_examples
    from scicot_jax.data.store import RationaleRecord, RationaleStore

    card_path = tmp / "bench_mc.toml"
    card_path.write_text(CARD.format(n=n, inputs=lengths[0], targets=lengths[1]))
    card = load_card(card_path)
    store = RationaleStore.create(tmp / "run", {"card": str(card_path), "teacher": "oracle"})
    store.extend(
        RationaleRecord(
            ex.id,
            i,
            synthetic.write_rationale("mc_reasoning", ex, i),
            ex.answer,
            True,
            "teacher:oracle",
            "zero_shot_cot",
            0.7,
        )
        for ex in read_examples(card, "train")
        for i in range(degree)
    )
    store.close()
    return tmp / "run"


def measure(name: str, lengths: dict[str, int], batch_size: int, min_examples: int) -> dict:
    """Examples/s of the task, then packed tokens/s of the batches (after a warm-up batch)."""
    import seqio

    task = seqio.get_mixture_or_task(name)
    n = int(task.source.get_dataset(split="train", shuffle=False).cardinality())
    epochs = max(1, -(-min_examples // n))

    # Timers start after the first element: building the rows and the graph is start-up cost.
    it = task.get_dataset(lengths, split="train", shuffle=True, seed=0, num_epochs=epochs)
    it = it.prefetch(2).as_numpy_iterator()
    next(it)
    t0 = time.perf_counter()
    ex_s = sum(1 for _ in it) / (time.perf_counter() - t0)

    ds = task.get_dataset(lengths, split="train", shuffle=True, seed=0, num_epochs=epochs)
    packed = seqio.EncDecFeatureConverter(pack=True)(ds, lengths)
    it = packed.batch(batch_size).prefetch(2).as_numpy_iterator()
    first = next(it)
    t0 = time.perf_counter()
    batches, real, examples = 0, 0, 0
    for b in it:
        batches += 1
        real += int(
            (b["encoder_input_tokens"] != 0).sum() + (b["decoder_target_tokens"] != 0).sum()
        )
        examples += int((b["decoder_target_tokens"] == 1).sum())  # one EOS per packed example
    dt = time.perf_counter() - t0
    slots = batches * batch_size * (lengths["inputs"] + lengths["targets"])
    return {
        "examples": n,
        "epochs": epochs,
        "examples_per_s": ex_s,
        "packed_examples_per_s": examples / dt,
        "batches_per_s": batches / dt,
        "slot_tokens_per_s": slots / dt,
        "real_tokens_per_s": real / dt,
        "packing_density": real / max(slots, 1),
        "examples_per_row": examples / max(batches * batch_size, 1),
        "first_batch_shape": tuple(first["encoder_input_tokens"].shape),
    }


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--examples", type=int, default=2200, help="questions (ARC-Easy train ~2.25k)")
    ap.add_argument("--degrees", default="1,10", help="rationales per question to bench")
    ap.add_argument("--lengths", default="256,256", help="inputs,targets feature lengths")
    ap.add_argument("--batch_size", type=int, default=64)
    ap.add_argument("--min_examples", type=int, default=10000, help="repeat epochs up to this")
    ap.add_argument("--vocab", default=None, help="SentencePiece path, 't5' or 'demo' (default)")
    ap.add_argument(
        "--target",
        type=float,
        default=500_000.0,
        help="trainer-side token slots/s to exceed (default: T5-small, one H100)",
    )
    a = ap.parse_args(argv)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    from scicot_jax import tasks
    from scicot_jax.data.vocab import get_vocabulary

    vocab = get_vocabulary(a.vocab or "demo")
    li, lt = (int(x) for x in a.lengths.split(","))
    lengths = {"inputs": li, "targets": lt}
    degrees = [int(d) for d in a.degrees.split(",")]
    print(
        f"vocab={vocab.sentencepiece_model_file} size={vocab.vocab_size} lengths={lengths} "
        f"batch={a.batch_size} cpus={os.cpu_count()} target={a.target:,.0f} tokens/s"
    )
    with tempfile.TemporaryDirectory() as tmp:
        run = make_run(Path(tmp), a.examples, max(degrees), (li, lt))
        tasks.register_run_dir(
            run, name="bench", vocabulary=vocab, methods=["one_stage"], degrees=degrees
        )
        for d in degrees:
            r = measure(
                f"scicot:bench_mc:one_stage:bench_d{d}", lengths, a.batch_size, a.min_examples
            )
            ratio = r["slot_tokens_per_s"] / a.target
            print(
                f"D={d:<3} examples={r['examples']:>6} epochs={r['epochs']:<3} "
                f"tokenize {r['examples_per_s']:>8,.0f} ex/s | packed "
                f"{r['packed_examples_per_s']:>8,.0f} ex/s {r['batches_per_s']:>6,.1f} batch/s "
                f"{r['slot_tokens_per_s']:>10,.0f} slot tok/s ({r['real_tokens_per_s']:,.0f} "
                f"real, density {r['packing_density']:.2f}, {r['examples_per_row']:.1f} ex/row) "
                f"| x{ratio:.2f} of target {'OK' if ratio >= 1 else 'BELOW'}"
            )


if __name__ == "__main__":
    main()
