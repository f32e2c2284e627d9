"""Metrics pages and endpoints: GET /api/org/metrics, the portal's /org/metrics, the
fleet's Prometheus /metrics, and the staff KPI page /staff/kpis. They parse, call
runtime.metrics / runtime.kpis, and render."""
from __future__ import annotations

import csv
import hmac

from django.conf import settings
from django.contrib.admin.views.decorators import staff_member_required
from django.db.models import F
from django.http import HttpResponse
from django.shortcuts import render
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import exceptions
from rest_framework.response import Response

from compliance.models import Alert
from levqor.errors import APIError, error_response
from runtime import charts, kpis, metrics, prometheus, queues
from runtime.models import Anomaly
from tenants.api_base import TenantAPIView
from tenants.authentication import APIKeyAuthentication
from tenants.context import current_tenant
from tenants.portal import portal_page

DEFAULT_WINDOW_MINUTES = 60
PORTAL_WINDOWS = (60, 360, 1440)
BRAND, ERROR, MUTED = "#3b5bdb", "#e8590c", "#adb5bd"


def _bounded_int(raw: str | None, *, name: str, default: int, low: int, high: int) -> int:
    if raw is None:
        return default
    if not (raw.isascii() and raw.isdigit() and len(raw) <= 9) or not low <= int(raw) <= high:
        raise APIError("invalid_input", f"{name} must be a whole number from {low} to {high}",
                       details={"param": name, "min": low, "max": high})
    return int(raw)


def window_minutes(raw: str | None) -> int:
    return _bounded_int(raw, name="minutes", default=DEFAULT_WINDOW_MINUTES, low=1, high=metrics.MAX_WINDOW_MINUTES)


def tenant_metrics(minutes: int) -> dict:
    """The current tenant's figures, as GET /api/org/metrics answers them."""
    ctx = current_tenant()
    window = metrics.tenant_window(minutes)
    jobs = metrics.job_counts(window["since"])
    depth, exact = queues.tenant_queue_depth(ctx.id)
    return {
        "window": {"minutes": minutes, "since": window["since"].isoformat(), "until": window["until"].isoformat()},
        "requests": window["requests"], "api_calls": window["api_calls"], "errors": window["errors"],
        "client_errors": window["client_errors"], "error_rate": window["error_rate"], "p95_ms": window["p95_ms"],
        "queue_depth": depth, "queue_depth_exact": exact,
        "jobs": {"succeeded": jobs["succeeded"], "failed": jobs["failed"]}, "job_success_rate": jobs["success_rate"],
        "series": window["series"],
    }


class OrgMetrics(TenantAPIView):
    """GET /api/org/metrics?minutes=60 (1..1440): this organization's figures over the window."""

    policy_actions = {"GET": "metrics:read"}

    @extend_schema(request=None, responses=OpenApiTypes.OBJECT, parameters=[
        OpenApiParameter("minutes", int, description="window length in minutes, 1 to 1440 (default 60)")])
    def get(self, request):
        return Response(tenant_metrics(window_minutes(request.query_params.get("minutes"))))


# --- portal ------------------------------------------------------------------------------


@portal_page("metrics:read")
def portal_metrics(request):
    try:
        minutes = window_minutes(request.GET.get("minutes"))
    except APIError as exc:
        return render(request, "portal/metrics.html", {"error": exc.message, "windows": PORTAL_WINDOWS}, status=400)
    data = tenant_metrics(minutes)
    labels = [point["minute"][11:16] for point in data["series"]]
    traffic = charts.column_chart("Requests per minute", labels, [
        ("answered", [p["requests"] - p["errors"] for p in data["series"]], BRAND),
        ("server errors", [p["errors"] for p in data["series"]], ERROR)], "requests (UTC)")
    latency = charts.line_chart("p95 latency per minute", labels, [
        ("p95", [p["p95_ms"] for p in data["series"]], BRAND)], "milliseconds")
    alerts = Alert.objects.filter(tenant_id=request.tenant.id, audience=Alert.Audience.TENANT).order_by(
        F("resolved_at").asc(nulls_first=True), "-created_at")[:20]  # open ones first
    anomalies = Anomaly.objects.order_by(F("resolved_at").asc(nulls_first=True), "-started_at").prefetch_related(
        "autoheal_runs")[:20]  # this organization's (tenant-scoped manager), open ones first
    return render(request, "portal/metrics.html", {"m": data, "minutes": minutes, "windows": PORTAL_WINDOWS,
                                                   "traffic_chart": traffic, "latency_chart": latency,
                                                   "alerts": alerts, "anomalies": anomalies})


# --- Prometheus ----------------------------------------------------------------------------


def prometheus_metrics(request):
    """GET /metrics for the fleet: `Authorization: Bearer <LEVQOR_METRICS_TOKEN>` or a
    platform staff key."""
    scheme, _, credential = request.META.get("HTTP_AUTHORIZATION", "").partition(" ")
    credential = credential.strip()
    if scheme.lower() != "bearer" or not credential:
        return error_response(401, "not_authenticated", "Send Authorization: Bearer <scrape token or staff key>.",
                              headers={"WWW-Authenticate": 'Bearer realm="levqor"'})
    token = settings.LEVQOR_METRICS_TOKEN
    if not (token and hmac.compare_digest(credential.encode(), token.encode())):
        try:
            principal, _ = APIKeyAuthentication().authenticate(request)
        except exceptions.AuthenticationFailed as exc:
            return error_response(401, "authentication_failed", str(exc.detail))
        if not principal.is_staff:
            return error_response(403, "forbidden", "Only platform staff keys and the scrape token may read /metrics.")
    return HttpResponse(prometheus.render(), content_type=prometheus.CONTENT_TYPE)


# --- staff KPIs ----------------------------------------------------------------------------


@staff_member_required
def staff_kpis(request):
    try:
        weeks = _bounded_int(request.GET.get("weeks"), name="weeks", default=12, low=1, high=kpis.MAX_WEEKS)
        fmt, table = request.GET.get("format", "html"), request.GET.get("table", "weeks")
        if fmt not in ("html", "csv") or table not in ("weeks", "tenants"):
            raise APIError("invalid_input", "format must be html or csv, table weeks or tenants",
                           details={"param": "format" if fmt not in ("html", "csv") else "table"})
    except APIError as exc:
        return error_response(400, exc.code, exc.message, exc.details)
    data = kpis.report(weeks)
    if fmt == "csv":
        return _csv(data, table)
    labels = [row["week"].strftime("%d %b") for row in data["weeks"]]
    rows = data["weeks"]
    return render(request, "runtime/kpis.html", {"k": data, "weeks": weeks, "charts": [
        charts.column_chart("New tenants per week", labels, [("new tenants", [r["new_tenants"] for r in rows], BRAND)],
                            "tenants (weeks start Monday, UTC)"),
        charts.line_chart("Time to provision", labels, [("p50", [r["provision_p50_ms"] for r in rows], MUTED),
                                                        ("p95", [r["provision_p95_ms"] for r in rows], BRAND)],
                          "milliseconds"),
        charts.line_chart("Fleet error rate", labels, [
            ("5xx", [_pct(r["error_rate"]) for r in rows], ERROR)], "percent of requests answered 5xx"),
        charts.line_chart("Backup restore success", labels, [
            ("verified", [_pct(r["restore_success"]) for r in rows], BRAND)], "percent of restores verified"),
        charts.column_chart("Revenue and cost per week", labels, [
            ("revenue", [r["revenue"] for r in rows], BRAND), ("cost", [r["cost"] for r in rows], MUTED)],
            f"{data['money']['currency']} (paid Stripe invoices; cost model LEVQOR_COST_*)"),
        charts.line_chart("ARPU and gross margin", labels, [
            ("ARPU", [r["arpu"] for r in rows], BRAND), ("gross margin %", [_pct(r["gross_margin"]) for r in rows], ERROR)],
            f"ARPU in {data['money']['currency']} per tenant; gross margin in percent of revenue"),
    ]})


def _pct(fraction: float | None) -> float | None:
    return None if fraction is None else round(fraction * 100, 2)


def _csv(data: dict, table: str) -> HttpResponse:
    header, rows = kpis.csv_rows(data, table)
    response = HttpResponse(content_type="text/csv")
    response["Content-Disposition"] = f'attachment; filename="levqor-kpis-{table}-{data["now"]:%Y%m%d}.csv"'
    writer = csv.writer(response)
    writer.writerow(header)
    writer.writerows(rows)
    return response
