"""Server-rendered SVG for the benchmarks (no plotting dependency, like bench/chart.py):
one horizontal bar per bucket at its median, with a line from p25 to p75."""
from __future__ import annotations

from html import escape

BAR, RANGE, INK, MUTED = "#3b5bdb", "#1d2330", "#1d2330", "#5b6477"


def _shown(value: float) -> str:
    return f"{value:,.0f}" if abs(value) >= 100 else f"{value:,.2f}".rstrip("0").rstrip(".")


def quantile_chart(title: str, unit: str, rows: list[tuple[str, dict]]) -> str:
    """`rows`: (label, {"p25", "p50", "p75"}). Linear scale from zero to the largest p75."""
    width, label_w, bar_h, gap, top = 720, 210, 18, 10, 48
    plot_w = width - label_w - 110
    height = top + len(rows) * (bar_h + gap) + 16
    vmax = max((figures["p75"] for _, figures in rows), default=0) or 1

    def x(value: float) -> float:
        return label_w + plot_w * value / vmax

    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" role="img" aria-label="{escape(title)}" width="{width}" '
             f'height="{height}" viewBox="0 0 {width} {height}" font-family="system-ui,sans-serif" font-size="12">',
             f'<rect width="{width}" height="{height}" fill="#fff"/>',
             f'<text x="12" y="22" font-size="15" font-weight="600" fill="{INK}">{escape(title)}</text>',
             f'<text x="12" y="38" fill="{MUTED}">{escape(unit)} · bar: median, line: p25 to p75</text>']
    for i, (label, figures) in enumerate(rows):
        y = top + i * (bar_h + gap)
        mid = y + bar_h / 2
        parts.append(f'<text x="{label_w - 8}" y="{mid + 4:.1f}" text-anchor="end" fill="{INK}">{escape(label)}</text>')
        parts.append(f'<rect x="{label_w}" y="{y}" width="{max(x(figures["p50"]) - label_w, 1):.1f}" height="{bar_h}" '
                     f'rx="3" fill="{BAR}" fill-opacity="0.75"/>')
        parts.append(f'<line x1="{x(figures["p25"]):.1f}" y1="{mid:.1f}" x2="{x(figures["p75"]):.1f}" y2="{mid:.1f}" '
                     f'stroke="{RANGE}" stroke-width="2"/>')
        parts.append(f'<text x="{x(figures["p75"]) + 6:.1f}" y="{mid + 4:.1f}" fill="{INK}">{_shown(figures["p50"])}</text>')
    parts.append("</svg>")
    return "\n".join(parts)
