"""Routes of metrics, alerts and KPIs. `api_urlpatterns` is included under /api/ (a tenant
route: /api/org is in LEVQOR_TENANT_ROUTE_PREFIXES), `urlpatterns` at the root."""
from django.urls import path

from runtime import metrics_views

api_urlpatterns = [
    path("org/metrics", metrics_views.OrgMetrics.as_view(), name="org-metrics"),
]

urlpatterns = [
    path("org/metrics", metrics_views.portal_metrics, name="org-metrics-page"),
    path("metrics", metrics_views.prometheus_metrics, name="prometheus-metrics"),
    path("staff/kpis", metrics_views.staff_kpis, name="staff-kpis"),
]
