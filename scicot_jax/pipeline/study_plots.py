"""PNG plots of a scaling study: test accuracy (mean ± std over seeds) against each sweep axis
(degree D, train fraction, student size, method) and against train tokens; the y-axis is fixed
at 0-100 %, with chance and the teacher's accuracy drawn as lines."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Sequence
from pathlib import Path

FLAT_COLORS = ("tab:red", "tab:brown", "tab:pink", "tab:olive")
# Hollow markers of distinct shapes: series at the same point (e.g. equal accuracies) stay
# visible on top of each other.
MARKERS = ("o", "s", "^", "D", "v", "P", "X")  # 7 shapes against 10 colours: pairs rarely repeat
TEACHER_COLORS = ("tab:green", "black")
TEACHER_NAMES = {"zero_shot_cot": "zero-shot CoT", "answer_conditioned": "answer-conditioned"}
SIZES = ("tiny", "small", "base", "large", "xl", "xxl")
AXES = {  # plot key -> (summary column, x-axis label)
    "degree": ("degree", "diverse-reasoning degree D (samples per question)"),
    "train_fraction": ("train_fraction", "fraction of the train questions"),
    "student": ("student", "student size"),
    "train_tokens": ("train_tokens_mean", "train tokens (the method's whole compute)"),
    "rationales_used": ("rationales_used_mean", "rationales used (kept teacher rationales)"),
    "student_tokens": (
        "student_tokens_mean",
        "rationale-student train tokens (one-stage student or Stage 1)",
    ),
}


def _label(r: dict, without: str, same: frozenset = frozenset()) -> str:
    """A series name from the point's fields other than the plotted axis and those the whole
    study holds fixed (``same``: one student size, one train fraction say nothing)."""
    parts = [r["method"]]
    if without not in ("degree", "rationales_used", "student_tokens") and r.get("degree"):
        parts.append(f"D={r['degree']}")
    if without != "student" and "student" not in same:
        parts.append(str(r["student"]))
    if without != "train_fraction" and "train_fraction" not in same:
        parts.append(f"f={r['train_fraction']}")
    return " ".join(parts)


def _fixed(summary: Sequence[dict]) -> frozenset:
    """The sweep fields with one value over the whole study."""
    return frozenset(
        k for k in ("student", "train_fraction") if len({r.get(k) for r in summary}) == 1
    )


def _x_value(axis: str) -> Callable[[dict], float]:
    if axis == "student":
        return lambda r: float(SIZES.index(r["student"]) if r["student"] in SIZES else len(SIZES))
    col = AXES[axis][0]
    return lambda r: float(r[col])


def _reference_lines(ax, summary: Sequence[dict]) -> None:
    """Chance, and each zero-shot teacher's accuracy (over all its samples, mean over the
    study's runs of the methods that learn from it). An answer-conditioned teacher is given the
    answer, so its 100 % is no teacher's skill: no line for it."""
    from scicot_jax.pipeline.config import ANSWERS_GIVEN, PROMPT_FOR

    chance = [r["chance"] for r in summary if r.get("chance") is not None]
    if chance:
        ax.axhline(sum(chance) / len(chance), ls="--", lw=1, color="gray", label="chance")
    teachers: dict[str, list[float]] = defaultdict(list)
    for r in summary:
        prompt = PROMPT_FOR.get(r["method"].partition("+")[0])
        if prompt and prompt not in ANSWERS_GIVEN and r.get("teacher_accuracy_mean"):
            teachers[prompt].append(r["teacher_accuracy_mean"])
    for (prompt, accs), ls, color in zip(sorted(teachers.items()), (":", "-."), TEACHER_COLORS):
        name = TEACHER_NAMES.get(prompt, prompt)
        # drawn over the frame: a teacher at 100 % sits on the top edge
        ax.axhline(sum(accs) / len(accs), ls=ls, lw=2, color=color, label=f"teacher ({name})",
                   clip_on=False, zorder=5)  # fmt: skip


def _finish(ax, fig, path: Path, ylabel: str = "test accuracy % (mean ± std)") -> Path:
    ax.set_ylim(0, 100)
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3)
    # Outside the axes, so the legend never hides a line or a band.
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.02, 1.0), borderaxespad=0)
    fig.savefig(path, dpi=110, bbox_inches="tight")
    return path


def line_plot(summary: Sequence[dict], axis: str, path: Path) -> Path:
    """Accuracy against one sweep axis: one line with a ± std band per series."""
    import matplotlib.pyplot as plt

    x_of = _x_value(axis)
    same = _fixed(summary)
    series: dict[str, list[tuple[float, float, float]]] = defaultdict(list)
    flat: list[dict] = []  # points without the axis (e.g. the baseline has no D): flat lines
    for r in summary:
        if r.get("accuracy_test_mean") is None:
            continue
        if axis != "student" and r.get(AXES[axis][0]) is None:
            continue  # e.g. a run from before per-stage accounting
        if axis in ("degree", "rationales_used") and not r.get("degree"):
            flat.append(r)
            continue
        series[_label(r, axis, same)].append(
            (x_of(r), r["accuracy_test_mean"], r.get("accuracy_test_std") or 0.0)
        )
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    for i, r in enumerate(flat):
        m, sd = r["accuracy_test_mean"], r.get("accuracy_test_std") or 0.0
        color = FLAT_COLORS[i % len(FLAT_COLORS)]
        line = ax.axhline(m, lw=1.2, color=color, label=_label(r, axis, same))
        ax.axhspan(m - sd, m + sd, color=line.get_color(), alpha=0.12)
    for k, (label, pts) in enumerate(sorted(series.items())):
        pts.sort()
        xs, ms, sds = zip(*pts)
        marker = MARKERS[k % len(MARKERS)]
        bars = ax.errorbar(xs, ms, yerr=sds, marker=marker, mfc="none", ms=8 - k % 3, capsize=3,
                           label=label)  # fmt: skip
        line = bars.lines[0]
        ax.fill_between(
            xs, [m - s for m, s in zip(ms, sds)], [m + s for m, s in zip(ms, sds)],
            color=line.get_color(), alpha=0.2,
        )  # fmt: skip
    _reference_lines(ax, summary)
    if axis == "degree":
        ax.set_xscale("log", base=2)
    elif axis in ("train_tokens", "student_tokens", "rationales_used"):
        xs_all = [x for pts in series.values() for x, _, _ in pts]
        if xs_all and max(xs_all) > 10 * min(xs_all):
            ax.set_xscale("log")
        else:  # compute-matched methods: one budget, a narrow range
            ax.ticklabel_format(axis="x", style="sci", scilimits=(0, 0))
            lo, hi = min(xs_all, default=0), max(xs_all, default=1)
            ax.set_xlim(lo * 0.9, hi * 1.1)
    elif axis == "train_fraction":
        ax.set_xlim(0, 1.05)  # fractions on their whole range: one value is not a trend
    elif axis == "student":
        present = sorted({x_of(r) for r in summary})
        ax.set_xticks(present, [SIZES[int(i)] if i < len(SIZES) else "other" for i in present])
    if len({x for pts in series.values() for x, _, _ in pts}) == 1:
        ax.set_title(f"one {axis.replace('_', ' ')} in this study: nothing swept", fontsize=8)
    ax.set_xlabel(AXES[axis][1])
    return _finish(ax, fig, path)


def method_plot(summary: Sequence[dict], path: Path) -> Path:
    """Accuracy per method (and D): bars with ± std error bars."""
    import matplotlib.pyplot as plt

    pts = [r for r in summary if r.get("accuracy_test_mean") is not None]
    pts.sort(key=lambda r: (r["method"] != "baseline", r["method"], r.get("degree") or 0))
    labels = [_label(r, "method", _fixed(summary)) for r in pts]
    fig, ax = plt.subplots(figsize=(max(6.4, 1.1 * len(pts)), 4.2))
    ax.bar(
        range(len(pts)),
        [r["accuracy_test_mean"] for r in pts],
        yerr=[r.get("accuracy_test_std") or 0.0 for r in pts],
        capsize=4,
        color="tab:blue",
        alpha=0.8,
    )
    ax.set_xticks(range(len(pts)), labels, rotation=20, ha="right", fontsize=7)
    _reference_lines(ax, summary)
    ax.set_xlabel("method")
    return _finish(ax, fig, path)


def plot_all(summary: Sequence[dict], out: Path) -> dict[str, Path]:
    """Every plot of the study under ``out``; returns {key: path}."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    paths = {
        key: line_plot(summary, key, out / f"accuracy_vs_{key}.png")
        for key in AXES
        if any(r.get(AXES[key][0]) is not None for r in summary)  # e.g. runs without stages
    }
    paths["method"] = method_plot(summary, out / "accuracy_by_method.png")
    plt.close("all")
    return paths
