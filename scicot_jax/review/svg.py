"""Line charts as inline SVG: training curves without importing matplotlib (the app starts fast,
and the static report stays text)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from html import escape

COLORS = ("#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b")


def _ticks(lo: float, hi: float, n: int = 4) -> list[float]:
    """About n round values spanning [lo, hi]."""
    if hi <= lo:
        return [lo]
    raw = (hi - lo) / n
    mag = 10 ** math.floor(math.log10(raw))
    step = next(m * mag for m in (1, 2, 2.5, 5, 10) if m * mag >= raw)
    first = math.ceil(lo / step) * step
    return [first + i * step for i in range(int((hi - first) / step + 1e-9) + 1)]


def _fmt(v: float) -> str:
    if v != 0 and (abs(v) >= 1e5 or abs(v) < 1e-3):
        return f"{v:.1e}"
    return f"{v:g}" if v == int(v) else f"{v:.3g}"


def line_chart(
    series: dict[str, Sequence[tuple[float, float]]],
    title: str,
    xlabel: str = "step",
    width: int = 420,
    height: int = 220,
) -> str:
    """An SVG chart of one or more (x, y) series; non-finite points are left out."""
    clean = {
        name: [(x, y) for x, y in pts if math.isfinite(x) and math.isfinite(y)]
        for name, pts in series.items()
    }
    clean = {k: v for k, v in clean.items() if v}
    left, right, top, bottom = 52, 12, 24, 34
    w, h = width - left - right, height - top - bottom
    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" class="chart" width="{width}" '
        f'height="{height}" viewBox="0 0 {width} {height}" role="img" '
        f'aria-label="{escape(title)}">',
        f'<text x="{left}" y="15" class="ct">{escape(title)}</text>',
    ]
    if not clean:
        out.append(f'<text x="{left}" y="{top + h / 2}">no finite values</text></svg>')
        return "".join(out)
    xs = [x for pts in clean.values() for x, _ in pts]
    ys = [y for pts in clean.values() for _, y in pts]
    x0, x1, y0, y1 = min(xs), max(xs), min(ys), max(ys)
    if x1 == x0:
        x0, x1 = x0 - 1, x1 + 1
    if y1 == y0:  # one value: a band around it (0.5 either side of a zero)
        pad = abs(y0) * 0.1 or 0.5
        y0, y1 = y0 - pad, y1 + pad

    def px(x: float) -> float:
        return left + (x - x0) / (x1 - x0) * w

    def py(y: float) -> float:
        return top + h - (y - y0) / (y1 - y0) * h

    out.append(f'<rect x="{left}" y="{top}" width="{w}" height="{h}" fill="none" stroke="#bbb"/>')
    for t in _ticks(y0, y1):
        out.append(
            f'<line x1="{left}" x2="{left + w}" y1="{py(t):.1f}" y2="{py(t):.1f}" stroke="#eee"/>'
            f'<text x="{left - 4}" y="{py(t) + 4:.1f}" text-anchor="end">{_fmt(t)}</text>'
        )
    for t in _ticks(x0, x1):
        out.append(
            f'<text x="{px(t):.1f}" y="{top + h + 14}" text-anchor="middle">{_fmt(t)}</text>'
        )
    out.append(
        f'<text x="{left + w / 2}" y="{height - 4}" text-anchor="middle">{escape(xlabel)}</text>'
    )
    for k, (name, pts) in enumerate(clean.items()):
        color = COLORS[k % len(COLORS)]
        path = " ".join(f"{px(x):.1f},{py(y):.1f}" for x, y in pts)
        out.append(f'<polyline fill="none" stroke="{color}" stroke-width="1.5" points="{path}"/>')
        if len(pts) <= 40:
            out += [
                f'<circle cx="{px(x):.1f}" cy="{py(y):.1f}" r="2" fill="{color}"/>' for x, y in pts
            ]
        if len(clean) > 1:
            out.append(
                f'<text x="{left + w - 4}" y="{top + 14 + 14 * k}" text-anchor="end" '
                f'fill="{color}">{escape(name)}</text>'
            )
    out.append("</svg>")
    return "".join(out)
