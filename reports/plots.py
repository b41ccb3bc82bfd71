"""Inline SVG plots, drawn here so the report needs no plotting library and no network.

A plot is a string of SVG; colours come from the report's CSS classes (`v-pass`, `series-3`, ...),
so the plots follow the page's palette and the verdict filter can hide their marks.
"""

from __future__ import annotations

import math

from markupsafe import Markup, escape

STRIP_WIDTH, STRIP_HEIGHT, PAD = 460, 18, 18
LOG_MIN, LOG_MAX = -4, 4  # error/budget from 1e-4 to 1e4; beyond is drawn at the edge with an arrow


def _x(ratio: float) -> float:
    if math.isnan(ratio):
        position = LOG_MAX
    elif ratio <= 0:
        position = LOG_MIN
    else:
        position = min(max(math.log10(ratio), LOG_MIN), LOG_MAX)
    return PAD + (position - LOG_MIN) / (LOG_MAX - LOG_MIN) * (STRIP_WIDTH - 2 * PAD)


def ratio_axis() -> Markup:
    """The shared log axis above the strips: decades, and the budget line at 1."""
    ticks = []
    for k in range(LOG_MIN, LOG_MAX + 1, 2):
        x = _x(10.0**k)
        ticks.append(
            f'<line x1="{x:.1f}" x2="{x:.1f}" y1="16" y2="22" class="axis"/>'
            f'<text x="{x:.1f}" y="12" text-anchor="middle" class="tick">1e{k}</text>'
        )
    return Markup(
        f'<svg class="strip" viewBox="0 0 {STRIP_WIDTH} 24" width="{STRIP_WIDTH}" height="24" role="img" '
        f'aria-label="axis: worst error divided by its budget, log scale">{"".join(ticks)}'
        f'<line x1="{PAD}" x2="{STRIP_WIDTH - PAD}" y1="22" y2="22" class="axis"/></svg>'
    )


def ratio_strip(points: list[dict]) -> Markup:
    """One row of the dot plot: a dot per result (`ratio`, `verdict`, `label`) on the log axis."""
    one = _x(1.0)
    marks = [f'<line x1="{one:.1f}" x2="{one:.1f}" y1="0" y2="{STRIP_HEIGHT}" class="budget"/>']
    for p in points:
        x, label = _x(p["ratio"]), escape(p["label"])
        verdict = escape(p["verdict"])
        marks.append(
            f'<circle cx="{x:.1f}" cy="{STRIP_HEIGHT / 2}" r="4" class="dot v-{verdict.replace(" ", "-")}" '
            f'data-verdict="{verdict}"><title>{label}</title></circle>'
        )
    return Markup(
        f'<svg class="strip" viewBox="0 0 {STRIP_WIDTH} {STRIP_HEIGHT}" width="{STRIP_WIDTH}" '
        f'height="{STRIP_HEIGHT}" role="img" aria-label="{len(points)} results">{"".join(marks)}</svg>'
    )


def lines(series: dict[str, list[float]], *, xlabel: str, ylabel: str, width=640, height=300) -> Markup:
    """A line chart of several series over steps 1..n, with a legend; the first series is dashed."""
    left, right, top, bottom = 56, 180, 12, 40
    values = [v for ys in series.values() for v in ys if math.isfinite(v)]
    if not values:
        return Markup("")
    lo, hi = min(values + [0.0]), max(values)
    hi = hi if hi > lo else lo + 1
    steps = max(len(ys) for ys in series.values())
    sx = lambda i: left + (i / max(steps - 1, 1)) * (width - left - right)  # noqa: E731
    sy = lambda v: top + (1 - (v - lo) / (hi - lo)) * (height - top - bottom)  # noqa: E731
    parts = [
        f'<line x1="{left}" x2="{left}" y1="{top}" y2="{height - bottom}" class="axis"/>',
        f'<line x1="{left}" x2="{width - right}" '
        f'y1="{height - bottom}" y2="{height - bottom}" class="axis"/>',
    ]
    for k in range(5):
        v = lo + (hi - lo) * k / 4
        parts.append(
            f'<text x="{left - 6}" y="{sy(v) + 4:.1f}" text-anchor="end" class="tick">{v:.3g}</text>'
            f'<line x1="{left}" x2="{width - right}" y1="{sy(v):.1f}" y2="{sy(v):.1f}" class="grid"/>'
        )
    for i in range(steps):
        parts.append(
            f'<text x="{sx(i):.1f}" y="{height - bottom + 16}" '
            f'text-anchor="middle" class="tick">{i + 1}</text>'
        )
    parts.append(
        f'<text x="{(left + width - right) / 2}" y="{height - 6}" text-anchor="middle" class="label">'
        f"{escape(xlabel)}</text>"
    )
    parts.append(
        f'<text transform="translate(14 {(top + height - bottom) / 2}) rotate(-90)" text-anchor="middle" '
        f'class="label">{escape(ylabel)}</text>'
    )
    for n, (name, ys) in enumerate(series.items()):
        points = " ".join(f"{sx(i):.1f},{sy(v):.1f}" for i, v in enumerate(ys) if math.isfinite(v))
        dash = ' stroke-dasharray="6 4"' if n == 0 else ""
        parts.append(
            f'<polyline points="{points}" class="series series-{n % 10}" fill="none"{dash}>'
            f"<title>{escape(name)}: {ys[-1]:.4g} after {len(ys)} steps</title></polyline>"
        )
        y = top + 14 * n + 6
        parts.append(
            f'<line x1="{width - right + 10}" x2="{width - right + 30}" y1="{y}" y2="{y}" '
            f'class="series series-{n % 10}"{dash}/>'
            f'<text x="{width - right + 36}" y="{y + 4}" class="legend">{escape(name)}</text>'
        )
    return Markup(
        f'<svg viewBox="0 0 {width} {height}" width="{width}" height="{height}" role="img" '
        f'aria-label="{escape(ylabel)} over {escape(xlabel)}">{"".join(parts)}</svg>'
    )
