"""Small SVG charts drawn on the server (no JavaScript, no plotting library), in the
style of bench/chart.py. Every text that reaches the SVG is escaped here, so templates
may include the result with |safe."""
from __future__ import annotations

from html import escape

WIDTH, HEIGHT = 760, 230
LEFT, RIGHT, TOP, BOTTOM = 56, 16, 40, 34
INK, MUTED, GRID = "#1d2330", "#5b6477", "#e3e6ee"


def _frame(title: str, unit: str, vmax: float, labels: list[str], legend: list[tuple[str, str]]) -> list[str]:
    plot_h = HEIGHT - TOP - BOTTOM
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {WIDTH} {HEIGHT}" width="100%" role="img" '
             f'font-family="system-ui,sans-serif" font-size="11"><title>{escape(title)}</title>',
             f'<rect width="{WIDTH}" height="{HEIGHT}" fill="#fff"/>',
             f'<text x="{LEFT}" y="16" font-size="13" font-weight="600" fill="{INK}">{escape(title)}</text>',
             f'<text x="{LEFT}" y="30" fill="{MUTED}">{escape(unit)}</text>']
    for fraction in (0, 0.5, 1):
        y = TOP + plot_h * (1 - fraction)
        parts.append(f'<line x1="{LEFT}" y1="{y:.1f}" x2="{WIDTH - RIGHT}" y2="{y:.1f}" stroke="{GRID}"/>')
        parts.append(f'<text x="{LEFT - 6}" y="{y + 4:.1f}" text-anchor="end" fill="{MUTED}">{_short(vmax * fraction)}</text>')
    if labels:
        step = max(1, len(labels) // 6)
        slot = (WIDTH - LEFT - RIGHT) / len(labels)
        for i in range(0, len(labels), step):
            x = LEFT + slot * (i + 0.5)
            parts.append(f'<text x="{x:.1f}" y="{HEIGHT - 12}" text-anchor="middle" fill="{MUTED}">{escape(labels[i])}</text>')
    x = WIDTH - RIGHT
    for name, color in reversed(legend):
        x -= 8 + 7 * len(name)
        parts.append(f'<rect x="{x:.1f}" y="8" width="10" height="10" fill="{color}"/>'
                     f'<text x="{x + 14:.1f}" y="17" fill="{INK}">{escape(name)}</text>')
    return parts


def _short(value: float) -> str:
    if value >= 10_000:
        return f"{value / 1000:,.0f}k"
    return f"{value:,.0f}" if value >= 10 or value == 0 else f"{value:.2g}"


def _top(values) -> float:
    present = [v for v in values if v is not None]
    return max(present, default=0) or 1


def column_chart(title: str, labels: list[str], series: list[tuple[str, list, str]], unit: str) -> str:
    """Stacked columns, one per label (missing values draw nothing)."""
    totals = [sum(values[i] or 0 for _, values, _ in series) for i in range(len(labels))]
    vmax = _top(totals)
    plot_h = HEIGHT - TOP - BOTTOM
    slot = (WIDTH - LEFT - RIGHT) / max(len(labels), 1)
    parts = _frame(title, unit, vmax, labels, [(name, color) for name, _, color in series])
    for i, label in enumerate(labels):
        base = 0.0
        for name, values, color in series:
            value = values[i] or 0
            if value <= 0:
                continue
            h = plot_h * value / vmax
            y = TOP + plot_h - plot_h * base / vmax - h
            parts.append(f'<rect x="{LEFT + slot * i + slot * 0.1:.1f}" y="{y:.1f}" width="{max(slot * 0.8, 1):.1f}" '
                         f'height="{h:.1f}" fill="{color}"><title>{escape(label)}: {escape(name)} {value:,}</title></rect>')
            base += value
    parts.append("</svg>")
    return "\n".join(parts)


def line_chart(title: str, labels: list[str], series: list[tuple[str, list, str]], unit: str) -> str:
    """Lines through the points that have a value (a gap where one is missing)."""
    vmax = _top([v for _, values, _ in series for v in values])
    plot_h = HEIGHT - TOP - BOTTOM
    slot = (WIDTH - LEFT - RIGHT) / max(len(labels), 1)
    parts = _frame(title, unit, vmax, labels, [(name, color) for name, _, color in series])
    for name, values, color in series:
        runs, run = [], []
        for i, value in enumerate(values):
            if value is None:
                runs, run = (runs + [run] if run else runs), []
                continue
            run.append((LEFT + slot * (i + 0.5), TOP + plot_h - plot_h * value / vmax, labels[i], value))
        runs += [run] if run else []
        for points in runs:
            path = " ".join(f"{x:.1f},{y:.1f}" for x, y, _, _ in points)
            parts.append(f'<polyline points="{path}" fill="none" stroke="{color}" stroke-width="2"/>')
            parts.extend(f'<circle cx="{x:.1f}" cy="{y:.1f}" r="2.5" fill="{color}"><title>{escape(label)}: '
                         f'{escape(name)} {value:,}</title></circle>' for x, y, label, value in points)
    parts.append("</svg>")
    return "\n".join(parts)
