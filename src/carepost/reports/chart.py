"""An SVG line chart of opens and clicks over time, human and machine as separate series,
built as a string (pure: no I/O, no dependency). Every piece of text is escaped and
stripped of characters XML 1.0 forbids, since a campaign name is typed by staff.

Each series is a `<g class="series" data-series="opens-human">` holding one polyline and
one `<circle data-start=... data-value=...>` per bucket, so a reader (or a test) can get
the numbers back from the picture.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from html import escape

from carepost.reports.splits import Bucket

WIDTH, HEIGHT = 960, 480
LEFT, RIGHT, TOP, BOTTOM = 72, 200, 56, 72
_NOT_XML = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ud800-\udfff\ufffe\uffff]")


@dataclass(frozen=True)
class Series:
    key: str  # e.g. opens-human
    label: str
    colour: str
    dashed: bool
    values: tuple[int, ...]


def text(value: str) -> str:
    """Safe as SVG text or attribute content."""
    return escape(_NOT_XML.sub("\ufffd", value), quote=True)


def nice_ceiling(value: int) -> int:
    """The smallest 1, 2 or 5 x 10^k at or above `value` (at least 1), for the y axis."""
    if value <= 1:
        return 1
    magnitude = int(10 ** math.floor(math.log10(value)))
    for step in (1, 2, 5, 10):
        if step * magnitude >= value:
            return step * magnitude
    return 10 * magnitude


def series_of(points: Sequence[Bucket]) -> list[Series]:
    """Human and machine opens and clicks; unknown-verdict series only when there are any."""

    def values(kind: str, verdict: str) -> tuple[int, ...]:
        return tuple(getattr(getattr(b, kind), verdict) for b in points)

    out = [
        Series("opens-human", "Opens (human)", "#1f5fa8", False, values("opens", "human")),
        Series("opens-machine", "Opens (machine)", "#7fa7d6", True, values("opens", "machine")),
        Series("clicks-human", "Clicks (human)", "#c25400", False, values("clicks", "human")),
        Series("clicks-machine", "Clicks (machine)", "#f0a060", True, values("clicks", "machine")),
    ]
    unknown = [
        Series("opens-unknown", "Opens (unknown)", "#555555", True, values("opens", "unknown")),
        Series("clicks-unknown", "Clicks (unknown)", "#999999", True, values("clicks", "unknown")),
    ]
    return out + [s for s in unknown if any(s.values)]


def _label(at: datetime, step: str) -> str:
    return at.strftime("%d %b %H:00") if step == "hour" else at.strftime("%d %b %Y")


def render(title: str, step: str, points: Sequence[Bucket]) -> str:
    """The chart as an SVG document. `step` is "hour" or "day" (the buckets' size)."""
    plot_w = WIDTH - LEFT - RIGHT
    plot_h = HEIGHT - TOP - BOTTOM
    series = series_of(points)
    top = nice_ceiling(max((max(s.values, default=0) for s in series), default=0))
    n = len(points)

    def x(i: int) -> float:
        return LEFT + (plot_w * (i + 0.5) / n if n else plot_w / 2)

    def y(v: int) -> float:
        return TOP + plot_h - plot_h * v / top

    unit = "hour" if step == "hour" else "day"
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{HEIGHT}" '
        f'viewBox="0 0 {WIDTH} {HEIGHT}" role="img" aria-labelledby="chart-title" '
        'font-family="sans-serif" font-size="12">',
        f'<title id="chart-title">{text(title)}</title>',
        f'<rect width="{WIDTH}" height="{HEIGHT}" fill="#ffffff"/>',
        f'<text class="title" x="{WIDTH / 2:.0f}" y="28" text-anchor="middle" '
        f'font-size="16" font-weight="bold">{text(title)}</text>',
        '<g class="axes" stroke="#333333" stroke-width="1">'
        f'<line x1="{LEFT}" y1="{TOP + plot_h}" x2="{LEFT + plot_w}" y2="{TOP + plot_h}"/>'
        f'<line x1="{LEFT}" y1="{TOP}" x2="{LEFT}" y2="{TOP + plot_h}"/></g>',
    ]
    ticks = ['<g class="y-ticks" text-anchor="end">']
    for k in range(5):
        ty = TOP + plot_h - plot_h * k / 4
        ticks.append(
            f'<line x1="{LEFT - 4}" y1="{ty:.1f}" x2="{LEFT + plot_w}" y2="{ty:.1f}" '
            f'stroke="#e0e0e0"/><text x="{LEFT - 8}" y="{ty + 4:.1f}">{top * k / 4:g}</text>'
        )
    ticks.append("</g>")
    parts += ticks
    every = max(1, math.ceil(n / 8)) if n else 1
    labels = ['<g class="x-ticks" text-anchor="middle">']
    for i, b in enumerate(points):
        if i % every == 0:
            label = text(_label(b.start, step))
            labels.append(f'<text x="{x(i):.1f}" y="{TOP + plot_h + 18}">{label}</text>')
    labels.append("</g>")
    parts += labels
    parts.append(
        f'<text class="x-label" x="{LEFT + plot_w / 2:.0f}" y="{HEIGHT - 24}" '
        f'text-anchor="middle">Time (UTC, one point per {unit})</text>'
    )
    parts.append(
        f'<text class="y-label" x="18" y="{TOP + plot_h / 2:.0f}" text-anchor="middle" '
        f'transform="rotate(-90 18 {TOP + plot_h / 2:.0f})">Events per {unit}</text>'
    )
    if not n:
        parts.append(
            f'<text class="empty" x="{LEFT + plot_w / 2:.0f}" y="{TOP + plot_h / 2:.0f}" '
            'text-anchor="middle" fill="#666666">No opens or clicks recorded</text>'
        )
    for s in series:
        dash = ' stroke-dasharray="6 4"' if s.dashed else ""
        coords = " ".join(f"{x(i):.1f},{y(v):.1f}" for i, v in enumerate(s.values))
        group = [
            f'<g class="series" data-series="{s.key}" fill="{s.colour}">',
            f'<polyline points="{coords}" fill="none" stroke="{s.colour}" stroke-width="2"{dash}/>',
        ]
        for i, (b, v) in enumerate(zip(points, s.values, strict=True)):
            group.append(
                f'<circle cx="{x(i):.1f}" cy="{y(v):.1f}" r="2.5" '
                f'data-start="{text(b.start.isoformat())}" data-value="{v}"/>'
            )
        group.append("</g>")
        parts += group
    legend = ['<g class="legend">']
    for k, s in enumerate(series):
        ly = TOP + 10 + 22 * k
        dash = ' stroke-dasharray="6 4"' if s.dashed else ""
        legend.append(
            f'<line x1="{WIDTH - RIGHT + 16}" y1="{ly}" x2="{WIDTH - RIGHT + 44}" y2="{ly}" '
            f'stroke="{s.colour}" stroke-width="2"{dash}/>'
            f'<text x="{WIDTH - RIGHT + 50}" y="{ly + 4}" data-series="{s.key}">'
            f"{text(s.label)}</text>"
        )
    legend.append("</g>")
    parts += legend
    parts.append("</svg>")
    return '<?xml version="1.0" encoding="UTF-8"?>\n' + "\n".join(parts) + "\n"
