"""The probes of the circuit breakers (runtime/breakers.py): one cheap, read-only check per
dependency, made without going through its breaker. `breakers.probe(name)` runs them
(auto-heal, staff), and a success closes the breaker.

- `stripe`: GET /v1/account with the platform key.
- `notion`: query the billing database for one page (Notion has no health endpoint).
- `siem:<stream id>`: POST an empty batch in the stream's format, through the SSRF guard;
  healthy when the receiver answers below 500 and not 429 (it is up, even if it has
  nothing to accept).
- `webhook:alerts`: POST a signed `{"probe": true}` (header `X-Levqor-Probe: 1`, delivery
  id `probe-<timestamp>`, not an alert) to LEVQOR_ALERT_WEBHOOK_URL, through the SSRF
  guard; healthy when the receiver answers below 500 and not 429.
- `replica:<region>`: `SELECT pg_is_in_recovery()` on the region's replica within
  LEVQOR_HEALTH_CHECK_TIMEOUT; healthy when it answers (a promoted replica answers too:
  whether it is still a standby is the DR coverage's question, not the breaker's).
"""
from __future__ import annotations

from compliance import outbound
from runtime import breakers


def probe_stripe(name: str) -> bool:
    from billing import stripe_api

    if not stripe_api.enabled():
        return False
    stripe_api.client().v1.accounts.retrieve_current()
    return True


def probe_notion(name: str) -> bool:
    import requests
    from django.conf import settings

    from billing import notion

    if not notion.enabled():
        return False
    response = notion._session().post(
        settings.NOTION_API_BASE.rstrip("/") + f"/v1/databases/{settings.NOTION_BILLING_DATABASE_ID}/query",
        json={"page_size": 1}, timeout=5)
    return isinstance(response, requests.Response) and response.status_code < 400


def probe_siem(name: str) -> bool:
    from compliance import streams
    from compliance.models import AuditStream
    from tenants import secrets

    stream = AuditStream.dangerously_all_tenants.filter(pk=int(name.partition(":")[2])).first()
    if stream is None:
        return False
    body, headers = streams.render(stream, [], secrets.decrypt(stream.secret_encrypted))
    response = outbound.post(stream.url, body=body, headers=headers, timeout=streams.TIMEOUT_SECONDS)
    return response.status_code < 500 and response.status_code != 429


def probe_alert_webhook(name: str) -> bool:
    import json
    import time

    from django.conf import settings

    from runtime import alerting

    if not (settings.LEVQOR_ALERT_WEBHOOK_URL and settings.LEVQOR_ALERT_WEBHOOK_SECRET):
        return False
    body = json.dumps({"probe": True}).encode()
    headers = {**alerting.signed_headers(body, f"probe-{int(time.time())}"), "X-Levqor-Probe": "1"}
    response = outbound.post(settings.LEVQOR_ALERT_WEBHOOK_URL, body=body, headers=headers,
                             timeout=alerting.TIMEOUT_SECONDS)
    return response.status_code < 500 and response.status_code != 429


def probe_replica(name: str) -> bool:
    import dj_database_url
    from django.conf import settings

    from runtime import dr

    region = settings.LEVQOR_REGIONS.get(name.partition(":")[2])
    if region is None or not region.replica_url:
        return False
    dr.probe(dj_database_url.parse(region.replica_url), replication=False)
    return True


def register() -> None:
    outbound.register_guard(breakers.guard)
    breakers.register_probe("stripe", probe_stripe)
    breakers.register_probe("notion", probe_notion)
    breakers.register_probe("siem", probe_siem)
    breakers.register_probe("replica", probe_replica)
    breakers.register_probe("webhook:alerts", probe_alert_webhook)
