"""A journey's funnel as an SVG (`carepost journey report NAME --chart FILE.svg`): one
horizontal bar per step in definition order, as long as the enrolments that entered it,
split into completed, waiting and ended there; the drop-off step is marked. Pure, no
dependency, in the style of reports/chart.py (every text escaped). Each step is a
`<g class="step" data-step=... data-entered=...>` so a reader can get the numbers back.
"""

from __future__ import annotations

from carepost.journeys.report import JourneyReport
from carepost.reports.chart import nice_ceiling, text

WIDTH = 960
LEFT, RIGHT, TOP, ROW, BOTTOM = 200, 200, 64, 34, 56
COLOURS = {"completed": "#1f5fa8", "waiting": "#7fa7d6", "ended": "#c25400"}
LABELS = {
    "completed": "Completed (went on)",
    "waiting": "Waiting or running here",
    "ended": "Ended here (exits, goal)",
}


def render(rep: JourneyReport) -> str:
    steps = [s for s in rep.steps if s.current]  # the funnel is the newest version's path
    n = len(steps)
    height = TOP + ROW * max(n, 1) + BOTTOM
    plot_w = WIDTH - LEFT - RIGHT
    top = nice_ceiling(max((s.entered for s in steps), default=0))
    title = f"Journey {rep.name}: funnel ({rep.enrolments} enrolments)"

    def w(v: int) -> float:
        return plot_w * v / top

    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{height}" '
        f'viewBox="0 0 {WIDTH} {height}" role="img" aria-labelledby="chart-title" '
        'font-family="sans-serif" font-size="12">',
        f'<title id="chart-title">{text(title)}</title>',
        f'<rect width="{WIDTH}" height="{height}" fill="#ffffff"/>',
        f'<text class="title" x="{WIDTH / 2:.0f}" y="28" text-anchor="middle" '
        f'font-size="16" font-weight="bold">{text(title)}</text>',
    ]
    ticks = ['<g class="x-ticks" text-anchor="middle">']
    bottom = TOP + ROW * max(n, 1)
    for k in range(5):
        tx = LEFT + plot_w * k / 4
        ticks.append(
            f'<line x1="{tx:.1f}" y1="{TOP - 6}" x2="{tx:.1f}" y2="{bottom}" stroke="#e0e0e0"/>'
            f'<text x="{tx:.1f}" y="{bottom + 16}">{top * k / 4:g}</text>'
        )
    ticks.append("</g>")
    parts += ticks
    parts.append(
        f'<text class="x-label" x="{LEFT + plot_w / 2:.0f}" y="{height - 16}" '
        'text-anchor="middle">Enrolments that entered the step</text>'
    )
    if not n:
        parts.append(
            f'<text class="empty" x="{LEFT + plot_w / 2:.0f}" y="{TOP + 20}" '
            'text-anchor="middle" fill="#666666">No steps</text>'
        )
    for i, s in enumerate(steps):
        y = TOP + ROW * i
        ended = max(s.entered - s.completed - s.waiting, 0)
        drop = s.step == rep.drop_off
        group = [
            f'<g class="step" data-step="{text(s.step)}" data-kind="{text(s.kind)}" '
            f'data-entered="{s.entered}" data-completed="{s.completed}" '
            f'data-waiting="{s.waiting}" data-ended="{ended}"'
            + (' data-drop-off="true"' if drop else "")
            + ">",
            f'<text x="{LEFT - 8}" y="{y + ROW / 2 + 4:.0f}" text-anchor="end"'
            + (' font-weight="bold"' if drop else "")
            + f">{text(s.step)} ({text(s.kind)})</text>",
        ]
        x = float(LEFT)
        for key, value in (("completed", s.completed), ("waiting", s.waiting), ("ended", ended)):
            if value:
                group.append(
                    f'<rect class="{key}" x="{x:.1f}" y="{y + 6}" width="{w(value):.1f}" '
                    f'height="{ROW - 12}" fill="{COLOURS[key]}"/>'
                )
                x += w(value)
        note = f"{s.entered}"
        if drop:
            note += "  ◀ drop-off"
        group.append(f'<text x="{x + 6:.1f}" y="{y + ROW / 2 + 4:.0f}">{text(note)}</text>')
        group.append("</g>")
        parts += group
    legend = ['<g class="legend">']
    for k, (key, label) in enumerate(LABELS.items()):
        ly = TOP + 10 + 22 * k
        legend.append(
            f'<rect x="{WIDTH - RIGHT + 16}" y="{ly - 8}" width="14" height="14" '
            f'fill="{COLOURS[key]}"/><text x="{WIDTH - RIGHT + 36}" y="{ly + 4}">'
            f"{text(label)}</text>"
        )
    legend.append("</g>")
    parts += legend
    parts.append("</svg>")
    return '<?xml version="1.0" encoding="UTF-8"?>\n' + "\n".join(parts) + "\n"
