"""The public benchmarks page and the org portal's Insights page."""
from __future__ import annotations

from django.shortcuts import redirect, render
from django.utils.safestring import mark_safe

from federation import charts, services
from federation.aggregate import GROUPINGS, latest_release
from federation.kpis import METRICS, SIZE_BANDS
from federation.models import INDUSTRIES
from tenants.portal import _act, _can, portal_page

LABELS = {"industry": dict(INDUSTRIES), "size_band": {name: name.title() for _, name in SIZE_BANDS}}
HEADINGS = {"industry": "By industry", "size_band": "By size (active members)"}


def _charts(groups: dict, grouping: str) -> list[str]:
    """One chart per metric that has at least one published bucket in the grouping."""
    published = groups.get(grouping, {})
    out = []
    for metric in METRICS:
        rows = [(LABELS[grouping].get(key, key), figures[metric.name])
                for key, figures in sorted(published.items()) if metric.name in figures]
        if rows:
            out.append(mark_safe(charts.quantile_chart(metric.label, metric.unit, rows)))  # built with escape()
    return out


def benchmarks(request):
    """/insights/benchmarks: public, no login. Only the published release is read."""
    release = latest_release()
    sections = []
    if release:
        groups = release.payload.get("groups", {})
        sections = [{"heading": HEADINGS[g], "charts": _charts(groups, g)} for g in GROUPINGS]
    return render(request, "insights/benchmarks.html", {"release": release, "sections": sections})


@portal_page("federation:read")
def insights(request):
    """/org/insights: the tenant's own numbers beside its industry's published percentiles,
    and the opt-in form (federation:manage)."""
    ctx = request.tenant
    if request.method == "POST":
        opted_in = request.POST.get("opted_in") == "on"
        _act(request, "federation:manage", lambda: services.federation_update(
            tenant_id=ctx.id, opted_in=opted_in, industry=request.POST.get("industry", ""),
            actor=request.principal.actor, request=request),
            "Saved. It applies from the next release." if opted_in else "Saved: your organization is not shared.")
        return redirect("org-insights")
    state = services.status(ctx.id)
    percentiles = state["industry_percentiles"] or {}
    rows = [{"label": m.label, "unit": m.unit, "own": state["own"].get(m.name), "published": percentiles.get(m.name)}
            for m in METRICS]
    return render(request, "portal/insights.html", {
        "state": state, "rows": rows, "industries": INDUSTRIES, "can_manage": _can(request, "federation:manage"),
        "industry_label": dict(INDUSTRIES).get(state["industry"] or "", ""),
    })
