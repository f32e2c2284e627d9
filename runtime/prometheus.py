"""The fleet's figures in Prometheus' text format (GET /metrics).

No series carries a tenant label: with thousands of tenants each would multiply the
scrape and the time-series database. Per-tenant figures are in GET /api/org/metrics and
/staff/kpis. Labels are bounded sets: status class, tenant status and plan, alert kind
and severity, queue name, delivery channel and status.
"""
from __future__ import annotations

import redis
from django.db.models import Count

from runtime import metrics, queues

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


def _label_value(value) -> str:
    return str(value).replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _sample(name: str, labels: dict, value) -> str:
    inner = ",".join(f'{key}="{_label_value(v)}"' for key, v in labels.items())
    return f"{name}{{{inner}}} {value}" if inner else f"{name} {value}"


def _family(name: str, kind: str, help_text: str, samples: list[str]) -> list[str]:
    return [f"# HELP {name} {help_text}", f"# TYPE {name} {kind}", *samples]


def _http_histogram() -> list[str]:
    name = "levqor_http_request_duration_seconds"
    try:
        fleet = metrics.fleet_histogram()
    except redis.RedisError:
        return []  # the other families still answer; the gap shows in Prometheus
    samples = []
    for klass, figures in fleet.items():
        cumulative = 0
        for bound, count in zip(metrics.BOUNDS_MS, figures["buckets"]):
            cumulative += count
            samples.append(_sample(f"{name}_bucket", {"status_class": klass, "le": f"{bound / 1000:g}"}, cumulative))
        samples.append(_sample(f"{name}_bucket", {"status_class": klass, "le": "+Inf"}, figures["count"]))
        samples.append(_sample(f"{name}_sum", {"status_class": klass}, round(figures["sum_ms"] / 1000, 6)))
        samples.append(_sample(f"{name}_count", {"status_class": klass}, figures["count"]))
    return _family(name, "histogram", "Requests served by every process (flushed figures), by status class.", samples)


def _tenants() -> list[str]:
    from tenants.models import Tenant

    rows = Tenant.objects.values("status", "plan").annotate(n=Count("pk")).order_by("status", "plan")
    lines = _family("levqor_tenants", "gauge", "Tenants by status and plan.",
                    [_sample("levqor_tenants", {"status": r["status"], "plan": r["plan"]}, r["n"]) for r in rows])
    hibernated = Tenant.objects.filter(hibernated_at__isnull=False).count()
    return lines + _family("levqor_tenants_hibernated", "gauge", "Tenants hibernated for being idle.",
                           [_sample("levqor_tenants_hibernated", {}, hibernated)])


def _alerts() -> list[str]:
    from compliance.models import Alert
    from runtime.models import AlertDelivery

    open_alerts = (Alert.objects.filter(resolved_at__isnull=True).values("kind", "severity")
                   .annotate(n=Count("pk")).order_by("kind", "severity"))
    deliveries = AlertDelivery.objects.values("channel", "status").annotate(n=Count("pk")).order_by("channel", "status")
    return (_family("levqor_alerts_open", "gauge", "Unresolved alerts by kind and severity.",
                    [_sample("levqor_alerts_open", {"kind": r["kind"], "severity": r["severity"]}, r["n"])
                     for r in open_alerts])
            + _family("levqor_alert_deliveries", "gauge", "Alert deliveries by channel and status.",
                      [_sample("levqor_alert_deliveries", {"channel": r["channel"], "status": r["status"]}, r["n"])
                       for r in deliveries]))


def _queues() -> list[str]:
    lengths = queues.queue_lengths()
    if lengths is None:
        return []
    return _family("levqor_celery_queue_length", "gauge", "Tasks waiting in the broker, by queue.",
                   [_sample("levqor_celery_queue_length", {"queue": q}, n) for q, n in sorted(lengths.items())])


def render() -> str:
    return "\n".join(_http_histogram() + _tenants() + _alerts() + _queues()) + "\n"
