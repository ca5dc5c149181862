"""Review app costs: one decision (rewrite + fsync of review.jsonl) and one rationales page, by
store size. Prints one JSON line per size. `python bench/review.py [--sizes 2400 20000]`."""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from scicot_jax.data import synthetic  # noqa: E402
from scicot_jax.data.store import RationaleRecord, RationaleStore  # noqa: E402
from scicot_jax.review import rationales  # noqa: E402
from scicot_jax.review.render import page  # noqa: E402
from scicot_jax.review.state import ReviewState  # noqa: E402


def make_store(path: Path, n: int) -> Path:
    examples = synthetic.generate("mc_reasoning", "train", n=n // 4)
    store = RationaleStore.create(path, {"answer_type": "multiple_choice"})
    store.write_examples(examples)
    store.extend(
        RationaleRecord(
            ex.id,
            i,
            synthetic.write_rationale("mc_reasoning", ex, i),
            ex.answer,
            True,
            "teacher:bench",
            "zero_shot_cot",
            0.7,
        )
        for ex in examples
        for i in range(4)
    )
    store.close()
    return path


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", type=int, nargs="+", default=[2400, 20000])
    ap.add_argument("--decisions", type=int, default=50)
    args = ap.parse_args()
    for n in args.sizes:
        with tempfile.TemporaryDirectory() as tmp:
            store = make_store(Path(tmp) / "store", n)
            t = time.perf_counter()
            st = ReviewState(store)  # exports review.jsonl on first open
            load = time.perf_counter() - t
            times = []
            for k in range(args.decisions):
                t = time.perf_counter()
                st.decide(st.items[k].key, "drop", None, 0)
                times.append(time.perf_counter() - t)
            t = time.perf_counter()
            ctx = rationales.view(st, {}, rationales.Query())
            html = page(
                "rationales.html",
                nonce="n",
                token="t",
                stores=[],
                store="s",
                review_file="f",
                progress=st.progress(),
                query=rationales.Query(),
                filters=rationales.FILTERS,
                sorts=rationales.SORTS,
                default_name="x",
                **ctx,
            )
            render = time.perf_counter() - t
            print(
                json.dumps(
                    {
                        "records": len(st.items),
                        "file_mb": round(st.path.stat().st_size / 1e6, 2),
                        "open_s": round(load, 3),
                        "decision_ms_median": round(1000 * statistics.median(times), 2),
                        "decision_ms_max": round(1000 * max(times), 2),
                        "page_ms": round(1000 * render, 1),
                        "page_kb": len(html) // 1000,
                    }
                ),
                flush=True,
            )


if __name__ == "__main__":
    main()
