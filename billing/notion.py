"""The nightly per-tenant billing summary in a Notion database ("Tenant Billing").

On when NOTION_TOKEN and NOTION_BILLING_DATABASE_ID are set, off otherwise. One page
per tenant and period, found again by its `Key` property (`<slug>:<YYYYMM>`), so the
nightly run updates the month's page instead of adding one per night. Uses Notion's
public REST API (version 2022-06-28): `POST /v1/databases/{id}/query`, `POST /v1/pages`,
`PATCH /v1/pages/{id}`. The database needs the properties Name (title), Key, Plan,
Status, Period (rich text), API calls, Workflow runs, Storage GB (number).
"""
from __future__ import annotations

import logging

import requests
from django.conf import settings

from compliance import outbound

logger = logging.getLogger(__name__)
NOTION_VERSION = "2022-06-28"
BREAKER = "notion"


def enabled() -> bool:
    return bool(settings.NOTION_TOKEN and settings.NOTION_BILLING_DATABASE_ID)


class NotionError(RuntimeError):
    pass


def _session() -> requests.Session:
    s = requests.Session()
    s.headers.update({"Authorization": f"Bearer {settings.NOTION_TOKEN}", "Notion-Version": NOTION_VERSION,
                      "Content-Type": "application/json"})
    return s


def _call(session, method: str, path: str, body: dict) -> dict:
    """One request, through the `notion` circuit breaker: unreachable, 5xx and 429 count as
    failures; another 4xx is Notion answering (a wrong token, a bad property)."""
    url = settings.NOTION_API_BASE.rstrip("/") + path
    try:
        with outbound.guard(BREAKER) as call:
            response = session.request(method, url, json=body, timeout=15)
            if response.status_code >= 500 or response.status_code == 429:
                call.failed(f"HTTP {response.status_code}")
    except outbound.CircuitOpen as exc:
        raise NotionError(f"Notion unavailable: {exc.message}") from None
    except requests.RequestException as exc:
        raise NotionError(f"Notion unreachable: {exc.__class__.__name__}") from None
    if response.status_code >= 400:
        try:
            detail = response.json().get("message", "")
        except ValueError:
            detail = ""
        raise NotionError(f"Notion {method} {path}: {response.status_code} {detail}")
    return response.json()


def _text(value: str) -> dict:
    return {"rich_text": [{"type": "text", "text": {"content": value}}]}


def summary_properties(s: dict) -> dict:
    return {
        "Name": {"title": [{"type": "text", "text": {"content": s["name"]}}]},
        "Key": _text(s["key"]), "Plan": _text(s["plan"]), "Status": _text(s["status"]), "Period": _text(s["period"]),
        "API calls": {"number": s["api_calls"]}, "Workflow runs": {"number": s["workflow_runs"]},
        "Storage GB": {"number": s["storage_gb"]},
    }


def summaries(period: str) -> list[dict]:
    """Each billed tenant's month so far, from the ledger and the last storage report."""
    from billing.models import MeterReport
    from policy.models import UsageCounter
    from tenants.models import Tenant, TenantBilling

    rows = TenantBilling.dangerously_all_tenants.select_related("tenant").exclude(
        tenant__status__in=[Tenant.Status.DELETED, Tenant.Status.PROVISIONING]).order_by("tenant_id")
    ids = [r.tenant_id for r in rows]
    ledger = {(c.tenant_id, c.metric): c.count for c in UsageCounter.dangerously_all_tenants.filter(
        tenant_id__in=ids, period=period)}
    storage = {}
    for r in MeterReport.dangerously_all_tenants.filter(tenant_id__in=ids, period=period, metric="storage_gb").order_by(
            "window"):
        storage[r.tenant_id] = r.value
    return [{"name": r.tenant.name, "key": f"{r.tenant.slug}:{period}", "plan": r.plan, "status": r.status,
             "period": period, "api_calls": ledger.get((r.tenant_id, "api_calls"), 0),
             "workflow_runs": ledger.get((r.tenant_id, "jobs"), 0), "storage_gb": storage.get(r.tenant_id, 0)}
            for r in rows]


def push_summaries(period: str | None = None) -> dict:
    """Create or update each tenant's page for the period. Returns counts."""
    from policy.quotas import period_of

    if not enabled():
        return {"enabled": False}
    period = period or period_of()
    session = _session()
    database = settings.NOTION_BILLING_DATABASE_ID
    created = updated = 0
    for s in summaries(period):
        found = _call(session, "POST", f"/v1/databases/{database}/query", {
            "filter": {"property": "Key", "rich_text": {"equals": s["key"]}}, "page_size": 1})
        properties = summary_properties(s)
        if found.get("results"):
            _call(session, "PATCH", f"/v1/pages/{found['results'][0]['id']}", {"properties": properties})
            updated += 1
        else:
            _call(session, "POST", "/v1/pages", {"parent": {"database_id": database}, "properties": properties})
            created += 1
    logger.info("Notion billing summaries for %s: %s created, %s updated", period, created, updated)
    return {"enabled": True, "period": period, "created": created, "updated": updated}
