"""Draw the benchmark figures in bench/results/*.json as SVG charts under docs/bench/.

No plotting dependency: plain SVG horizontal bar charts (log scale where the values span
orders of magnitude). Run after the benchmarks: .venv/bin/python bench/chart.py
"""
from __future__ import annotations

import json
import math
from html import escape
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
OUT = ROOT / "docs" / "bench"
COLORS = {"schema": "#3b5bdb", "database": "#0ca678", "migrate_baseline": "#e8590c", "full": "#3b5bdb",
          "plain": "#adb5bd", "one": "#3b5bdb", "spread": "#0ca678"}


def bar_chart(title: str, rows: list[tuple[str, float, str]], unit: str, *, log: bool = False,
              target: float | None = None) -> str:
    width, label_w, bar_h, gap, top = 760, 250, 20, 8, 48
    plot_w = width - label_w - 90
    height = top + len(rows) * (bar_h + gap) + 30
    values = [v for _, v, _ in rows] + ([target] if target else [])
    vmax = max(values) or 1
    lo = min(v for v in values if v > 0) if log else 0

    def scale(v: float) -> float:
        if log:
            low, high = math.log10(lo / 2), math.log10(vmax * 1.2)
            return plot_w * (math.log10(max(v, lo / 2)) - low) / (high - low)
        return plot_w * v / (vmax * 1.1)

    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" font-family="system-ui,sans-serif" font-size="12">',
             f'<rect width="{width}" height="{height}" fill="#fff"/>',
             f'<text x="12" y="24" font-size="15" font-weight="600" fill="#1d2330">{escape(title)}</text>',
             f'<text x="12" y="40" fill="#5b6477">{escape(unit)}{" (log scale)" if log else ""}</text>']
    for i, (label, value, color) in enumerate(rows):
        y = top + i * (bar_h + gap)
        w = max(scale(value), 1)
        parts.append(f'<text x="{label_w - 8}" y="{y + 14}" text-anchor="end" fill="#1d2330">{escape(label)}</text>')
        parts.append(f'<rect x="{label_w}" y="{y}" width="{w:.1f}" height="{bar_h}" rx="3" fill="{color}"/>')
        shown = f"{value:,.0f}" if value >= 100 else f"{value:,.1f}"
        parts.append(f'<text x="{label_w + w + 6:.1f}" y="{y + 14}" fill="#1d2330">{shown}</text>')
    if target:
        x = label_w + scale(target)
        parts.append(f'<line x1="{x:.1f}" y1="{top - 6}" x2="{x:.1f}" y2="{height - 24}" stroke="#c92a2a" stroke-dasharray="4 3"/>')
        parts.append(f'<text x="{x + 4:.1f}" y="{height - 10}" fill="#c92a2a">target {target:,.0f}</text>')
    parts.append("</svg>")
    return "\n".join(parts)


def main() -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    provision = RESULTS / "provision.json"
    if provision.exists():
        data = json.loads(provision.read_text())["results"]
        rows = []
        for size, figures in data.items():
            for strategy in ("schema", "database", "migrate_baseline"):
                rows.append((f"{strategy.replace('_', ' ')} · {int(size):,} tenants", figures[strategy]["p95_ms"],
                             COLORS[strategy]))
        (OUT / "provision.svg").write_text(bar_chart("Time to provision one tenant (p95)", rows, "milliseconds",
                                                     log=True, target=1000))
    policy = RESULTS / "policy.json"
    if policy.exists():
        stack = json.loads(policy.read_text())["stack"]
        rows = [("plain DRF request p50", stack["plain_drf_p50_ms"], COLORS["plain"]),
                ("with tenancy stack p50", stack["full_stack_p50_ms"], COLORS["full"]),
                ("plain DRF request p95", stack["plain_drf_p95_ms"], COLORS["plain"]),
                ("with tenancy stack p95", stack["full_stack_p95_ms"], COLORS["full"])]
        (OUT / "policy.svg").write_text(bar_chart("GET /api/workflows, in-process", rows, "milliseconds"))
    audit = RESULTS / "audit.json"
    if audit.exists():
        figures = json.loads(audit.read_text())
        rows = [("writes, one tenant", figures["write_one_tenant"]["events_per_second"], COLORS["one"]),
                ("writes, 100 tenants", figures["write_100_tenants"]["events_per_second"], COLORS["spread"]),
                ("stream delivery (webhook)", figures["stream_webhook"]["events_per_second"], COLORS["schema"])]
        (OUT / "audit.svg").write_text(bar_chart("Audit events per second (hash-chained)", rows, "events/second",
                                                 log=True, target=2000))
    load = RESULTS / "load.json"
    if load.exists():
        figures = json.loads(load.read_text())
        base, noisy = figures["baseline"], figures["with_noisy_neighbour"]
        rows = [("others p50, steady", base["p50_ms"], COLORS["plain"]),
                ("others p50, noisy neighbour", noisy["p50_ms"], COLORS["full"]),
                ("others p95, steady", base["p95_ms"], COLORS["plain"]),
                ("others p95, noisy neighbour", noisy["p95_ms"], COLORS["full"])]
        (OUT / "load.svg").write_text(bar_chart("100 tenants, one at 10x its rate limit", rows, "milliseconds"))
    fleet = RESULTS / "fleet_migrate.json"
    if fleet.exists():
        figures = json.loads(fleet.read_text())
        rows = [("no-change migrate", figures["no_change_s"], COLORS["schema"]),
                ("additive column", figures["additive_column_s"], COLORS["database"])]
        (OUT / "fleet_migrate.svg").write_text(bar_chart(f"migrate across {figures['tenants']:,} tenant schemas", rows,
                                                         "seconds", target=15))
    metering = RESULTS / "metering.json"
    if metering.exists():
        sync = json.loads(metering.read_text())["sync"]
        rows = [("usage sync to Stripe", sync["seconds"], COLORS["schema"]),
                ("re-run (nothing to send)", sync["rerun_seconds"], COLORS["plain"]),
                ("reconciliation", sync["reconcile_seconds"], COLORS["database"])]
        (OUT / "metering.svg").write_text(bar_chart(f"Nightly billing for {sync['tenants']:,} tenants", rows, "seconds",
                                                    target=60))
    backup = RESULTS / "backup.json"
    if backup.exists():
        figures = json.loads(backup.read_text())["by_tenants"]
        rows = []
        for size, f in figures.items():
            rows.append((f"our backup · {int(size):,} tenants", f["backup_ms"], COLORS["schema"]))
            if f.get("pg_dump_ms"):
                rows.append((f"pg_dump -n · {int(size):,} tenants", f["pg_dump_ms"], COLORS["migrate_baseline"]))
            rows.append((f"restore + verify · {int(size):,} tenants", f["restore_ms"], COLORS["database"]))
        (OUT / "backup.svg").write_text(bar_chart("One tenant's backup and restore as the fleet grows", rows,
                                                  "milliseconds (median)"))
    anomaly = RESULTS / "anomaly.json"
    if anomaly.exists():
        figures = json.loads(anomaly.read_text())
        delay = figures["delay_minutes"]
        rows = [("median detection delay", delay["median"], COLORS["plain"]),
                ("p95 detection delay", delay["p95"], COLORS["schema"]),
                ("max detection delay", delay["max"], COLORS["migrate_baseline"])]
        rows += [(f"max delay · {kind.replace('_', ' ')}", f["max_delay"] or 0, COLORS["database"])
                 for kind, f in figures["by_kind"].items() if f["injected"]]
        title = (f"Anomaly detection: {figures['injected']} injected into {figures['tenants']} tenants' week, "
                 f"recall {figures['recall']:.0%}")
        (OUT / "anomaly.svg").write_text(bar_chart(title, rows, "simulated minutes", target=5))
        rows = [("seasonal baseline (3 weeks of history)", figures["false_alerts_per_tenant_week"], COLORS["schema"])]
        fresh = RESULTS / "anomaly_no_history.json"
        if fresh.exists():
            rows.append(("recent baseline only (first week)",
                         json.loads(fresh.read_text())["false_alerts_per_tenant_week"], COLORS["plain"]))
        (OUT / "anomaly_false_alerts.svg").write_text(bar_chart("False alerts per tenant per week", rows,
                                                                "episodes not matching an injection", target=1))


if __name__ == "__main__":
    main()
