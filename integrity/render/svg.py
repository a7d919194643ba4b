"""Charts of integrity.evidence as inline SVG: no script, no library, no network.

Every data point is one SVG element (`circle` or `rect`) of class `point` carrying its
data in attributes (`data-series`, `data-x`, `data-y`, `data-flagged`) and its label in a
`<title>` (a browser shows it on hover), so a reader, a test or a script can take the
numbers back out of the page. The `<svg>` carries `data-chart` and `data-points`, and a
threshold its `data-threshold`.
"""

from __future__ import annotations

from datetime import datetime, timezone
from html import escape

WIDTH, HEIGHT = 760, 230
LEFT, RIGHT, TOP, BOTTOM = 70, 16, 14, 40
PLOT_W, PLOT_H = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM
COLOURS = ("#2563eb", "#9333ea", "#dc2626", "#059669", "#d97706")
FLAGGED = "#dc2626"


def _a(value) -> str:
    return escape(str(value), quote=True)


def _num(value: float) -> str:
    return f"{value:.1f}"


def _x_text(x) -> str:
    if isinstance(x, datetime):
        return x.astimezone(timezone.utc).isoformat(timespec="seconds").replace("+00:00", "Z")
    return str(x)


def value_text(value: float | None, unit: str) -> str:
    """A value as the page shows it, in its unit."""
    if value is None:
        return "-"
    if unit == "bytes":
        for suffix in ("B", "KB", "MB", "GB", "TB"):
            if abs(value) < 1024 or suffix == "TB":
                return f"{value:.0f} {suffix}" if suffix == "B" else f"{value:.1f} {suffix}"
            value /= 1024
    if unit == "seconds":
        if value >= 86400:
            return f"{value / 86400:.1f} d"
        if value >= 3600:
            return f"{value / 3600:.1f} h"
        if value >= 120:
            return f"{value / 60:.1f} min"
        return f"{value:.2f} s" if value < 10 else f"{value:.0f} s"
    if unit == "ratio":
        return f"{value:.4f}".rstrip("0").rstrip(".") if value != 1 else "1"
    return f"{value:,.0f}" if float(value).is_integer() else f"{value:,.2f}"


def _y_range(chart) -> tuple[float, float]:
    values = [p.y for s in chart.series for p in s.points]
    if chart.threshold is not None:
        values.append(chart.threshold)
    if chart.unit == "ratio":
        low = min(values + [1.0])
        return (max(0.0, low - (1 - low) * 0.2 - 0.001) if low > 0.5 else 0.0), 1.0
    top = max(values + [0.0])
    if top <= 0:
        return 0.0, 1.0
    # Seconds tick in the unit value_text shows them in (2 h, not 7,200 s rounded to 8,000 s).
    scale = next((size for limit, size in ((86400 * 2, 86400), (7200, 3600), (240, 60)) if top >= limit), 1) \
        if chart.unit == "seconds" else 1
    return 0.0, _nice_ceiling(top * 1.05 / scale) * scale


def _nice_ceiling(value: float) -> float:
    """The smallest of 1, 2, 4, 5, 8 times a power of ten at or above `value`: quarters
    of it (the four grid steps) are round numbers."""
    import math

    power = 10 ** math.floor(math.log10(value))
    return next(step * power for step in (1, 2, 4, 5, 8, 10) if step * power >= value)


def chart_svg(chart, start: datetime, end: datetime) -> str:
    """One chart as an <svg> element (a string of markup)."""
    parts = [f'<svg class="chart" viewBox="0 0 {WIDTH} {HEIGHT}" width="{WIDTH}" height="{HEIGHT}" role="img" '
             f'aria-label="{_a(chart.title)}" data-chart="{_a(chart.id)}" data-points="{chart.point_count}" '
             f'xmlns="http://www.w3.org/2000/svg">']
    low, high = _y_range(chart)

    def y_of(value: float) -> float:
        return TOP + PLOT_H - (value - low) / (high - low) * PLOT_H

    # Axes and y ticks.
    parts.append(f'<line class="axis" x1="{LEFT}" y1="{TOP + PLOT_H}" x2="{LEFT + PLOT_W}" y2="{TOP + PLOT_H}"/>')
    parts.append(f'<line class="axis" x1="{LEFT}" y1="{TOP}" x2="{LEFT}" y2="{TOP + PLOT_H}"/>')
    for i in range(5):
        value = low + (high - low) * i / 4
        y = y_of(value)
        parts.append(f'<line class="grid" x1="{LEFT}" y1="{_num(y)}" x2="{LEFT + PLOT_W}" y2="{_num(y)}"/>')
        parts.append(f'<text class="tick" x="{LEFT - 6}" y="{_num(y + 4)}" text-anchor="end">{_a(value_text(value, chart.unit))}</text>')

    categories = []
    if chart.categorical:
        for series in chart.series:
            for p in series.points:
                if p.x not in categories:
                    categories.append(p.x)
        slot = PLOT_W / max(len(categories), 1)

        def x_of(x) -> float:
            return LEFT + slot * (categories.index(x) + 0.5)

        for name in categories:
            parts.append(f'<text class="tick" x="{_num(x_of(name))}" y="{TOP + PLOT_H + 14}" text-anchor="middle">'
                         f'{_a(name if len(name) <= 22 else name[:21] + "…")}</text>')
    else:
        span = max((end - start).total_seconds(), 1.0)
        slot = None

        def x_of(x) -> float:
            return LEFT + max(0.0, min(1.0, (x - start).total_seconds() / span)) * PLOT_W

        for i in range(5):
            moment = start + (end - start) * (i / 4)
            anchor = "start" if i == 0 else "end" if i == 4 else "middle"
            parts.append(f'<text class="tick" x="{_num(LEFT + PLOT_W * i / 4)}" y="{TOP + PLOT_H + 14}" '
                         f'text-anchor="{anchor}">{moment:%Y-%m-%d %H:%M}</text>')

    if chart.threshold is not None and low <= chart.threshold <= high:
        y = y_of(chart.threshold)
        parts.append(f'<line class="threshold" x1="{LEFT}" y1="{_num(y)}" x2="{LEFT + PLOT_W}" y2="{_num(y)}" '
                     f'data-threshold="{chart.threshold!r}"><title>{_a(chart.threshold_label)}</title></line>')
        parts.append(f'<text class="threshold-label" x="{LEFT + PLOT_W - 4}" y="{_num(y - 4)}" text-anchor="end">'
                     f'{_a(chart.threshold_label)}</text>')

    bar_series = [s for s in chart.series if s.kind == "bars"]
    bucket_width = _bar_slot(chart, start, end) if bar_series and not chart.categorical else slot
    for index, series in enumerate(chart.series):
        colour = COLOURS[index % len(COLOURS)]
        parts.append(f'<g class="series" data-series="{_a(series.name)}" fill="{colour}" stroke="{colour}">')
        if series.kind == "line" and len(series.points) > 1:
            path = " ".join(f"{_num(x_of(p.x))},{_num(y_of(p.y))}" for p in series.points)
            parts.append(f'<polyline class="line" fill="none" points="{path}"/>')
        for p in series.points:
            data = (f'class="point{" flagged" if p.flagged else ""}" data-series="{_a(series.name)}" '
                    f'data-x="{_a(_x_text(p.x))}" data-y="{p.y!r}" data-flagged="{str(p.flagged).lower()}"')
            fill = f' fill="{FLAGGED}" stroke="{FLAGGED}"' if p.flagged else ""
            if series.kind == "bars":
                width = max(1.5, (bucket_width or 8) * 0.8 / max(len(bar_series), 1))
                offset = bar_series.index(series) * width - width * len(bar_series) / 2
                x = x_of(p.x) + offset + (0 if chart.categorical else (bucket_width or 0) / 2)
                top = y_of(p.y)
                parts.append(f'<rect {data} x="{_num(x)}" y="{_num(top)}" width="{_num(width)}" '
                             f'height="{_num(TOP + PLOT_H - top)}"{fill}><title>{_a(p.label)}</title></rect>')
            else:
                radius = 4.5 if p.flagged else 3
                parts.append(f'<circle {data} cx="{_num(x_of(p.x))}" cy="{_num(y_of(p.y))}" r="{radius}"{fill}>'
                             f'<title>{_a(p.label)}</title></circle>')
        parts.append("</g>")
    if chart.point_count == 0:
        parts.append(f'<text class="empty" x="{LEFT + PLOT_W / 2}" y="{TOP + PLOT_H / 2}" text-anchor="middle">'
                     "no data in this window</text>")
    parts.append("</svg>")
    return "".join(parts)


def _bar_slot(chart, start: datetime, end: datetime) -> float:
    """The width of one time bucket of a bar series, in pixels (from its points' spacing)."""
    moments = sorted({p.x for s in chart.series for p in s.points})
    span = max((end - start).total_seconds(), 1.0)
    if len(moments) < 2:
        return PLOT_W / 30
    step = min((b - a).total_seconds() for a, b in zip(moments, moments[1:]))
    return max(2.0, step / span * PLOT_W)
