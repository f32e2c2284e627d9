"""SIEM streams: the tenant's audit trail delivered, in order, to Splunk HEC, Datadog logs
or a signed webhook.

The audit table is the outbox: each stream keeps a cursor (the last seq delivered) and a
delivery sends the next batch after it, then advances the cursor. Only sealed events have
a seq; seals commit one after another under the tenant's chain lock, each continuing
from the last, so an event sealed later always lands after every cursor. Every event
carries a stable id (`<tenant id>-<seq>`), so a receiver that honours ids never sees one
twice even if a delivery is retried after the receiver accepted it but before we heard
back. Failures retry with exponential backoff (Celery); after MAX_FAILURES the stream is
`dead` and an alert is raised; `stream_replay()` rewinds the cursor to a point in time.
"""
from __future__ import annotations

import json
import logging

import requests
from django.db import transaction
from django.utils import timezone

from compliance import audit, outbound
from compliance.alerts import alert_raise
from compliance.models import AuditEvent, AuditStream
from levqor.errors import APIError
from tenants import secrets

logger = logging.getLogger(__name__)
BATCH = 200
TIMEOUT_SECONDS = 5.0
MAX_FAILURES = 30  # with backoff capped at 5 minutes: well over an hour of outage


def event_payload(event: AuditEvent) -> dict:
    return {"id": f"{event.tenant_id}-{event.seq}", "tenant_id": event.tenant_id, "seq": event.seq,
            "event": event.event, "actor": event.actor, "ts": event.ts.isoformat(), "ip": event.ip,
            "metadata": event.metadata_json, "hash": event.hash}


def render(stream: AuditStream, events: list[AuditEvent], secret: str) -> tuple[bytes, dict]:
    payloads = [event_payload(e) for e in events]
    if stream.kind == AuditStream.Kind.SPLUNK:
        # HEC batch format: concatenated event objects.
        body = "".join(json.dumps({"time": round(e.ts.timestamp(), 3), "host": "levqor", "source": "levqor",
                                   "sourcetype": "levqor:audit", "event": p}, separators=(",", ":"))
                       for e, p in zip(events, payloads)).encode()
        return body, {"Authorization": f"Splunk {secret}", "Content-Type": "application/json"}
    if stream.kind == AuditStream.Kind.DATADOG:
        body = json.dumps([{"ddsource": "levqor", "service": "levqor-audit", "hostname": "levqor",
                            "ddtags": f"tenant_id:{p['tenant_id']},event:{p['event']}", "message": json.dumps(p),
                            "event_id": p["id"]} for p in payloads], separators=(",", ":")).encode()
        return body, {"DD-API-KEY": secret, "Content-Type": "application/json"}
    body = json.dumps({"events": payloads}, separators=(",", ":")).encode()
    return body, outbound.signed_json_headers(secret, body)


def deliver(stream_id: int) -> dict:
    """Deliver the next batch of one stream. Serialized per stream by a row lock."""
    with transaction.atomic():
        stream = (AuditStream.dangerously_all_tenants.select_for_update(skip_locked=True)
                  .filter(pk=stream_id, state__in=[AuditStream.State.ACTIVE, AuditStream.State.FAILING]).first())
        if stream is None:
            return {"sent": 0, "more": False, "state": None}
        events = list(AuditEvent.dangerously_all_tenants.filter(tenant_id=stream.tenant_id, seq__gt=stream.cursor_seq)
                      .order_by("seq")[:BATCH])
        if not events:
            return {"sent": 0, "more": False, "state": stream.state}
        body, headers = render(stream, events, secrets.decrypt(stream.secret_encrypted))
        circuit_open = None
        try:
            with outbound.guard(breaker_name(stream.pk)) as call:
                response = outbound.post(stream.url, body=body, headers=headers, timeout=TIMEOUT_SECONDS)
                error = None if 200 <= response.status_code < 300 else f"HTTP {response.status_code}"
                if error:
                    call.failed(error)
        except outbound.CircuitOpen as exc:
            circuit_open, error = exc, exc.message[:500]
        except (requests.RequestException, APIError) as exc:
            error = f"{type(exc).__name__}: {exc}"[:500]
        if circuit_open is not None:
            # Nothing was sent and the cursor stays: the events wait in the outbox. Not a
            # delivery attempt either, so it does not bring the stream closer to `dead`.
            stream.last_error = error
            stream.state = AuditStream.State.FAILING
            stream.save(update_fields=["state", "last_error"])
            return {"sent": 0, "more": False, "state": stream.state, "failures": stream.failures, "error": error,
                    "retry_after": circuit_open.retry_after}
        if error is None:
            stream.cursor_seq = events[-1].seq
            stream.failures = 0
            stream.state = AuditStream.State.ACTIVE
            stream.last_error = ""
            stream.last_delivered_at = timezone.now()
        else:
            stream.failures += 1
            stream.last_error = error
            stream.state = AuditStream.State.FAILING
            if stream.failures >= MAX_FAILURES:
                stream.state = AuditStream.State.DEAD
                alert_raise(kind="siem.delivery_failed", tenant_id=stream.tenant_id, severity="critical",
                            message=f"SIEM stream {stream.name} gave up after {stream.failures} failures: {error}",
                            metadata={"stream_id": stream.pk, "cursor_seq": stream.cursor_seq},
                            dedupe_key=f"stream:{stream.pk}")
        stream.save(update_fields=["cursor_seq", "failures", "state", "last_error", "last_delivered_at"])
    return {"sent": len(events) if error is None else 0, "more": error is None and len(events) == BATCH,
            "state": stream.state, "failures": stream.failures, "error": error}


def breaker_name(stream_id: int) -> str:
    """The stream's circuit breaker (runtime/breakers.py)."""
    return f"siem:{stream_id}"


def schedule_for_tenant(tenant_id: int) -> None:
    """After an audit event commits: wake the tenant's streams."""
    from compliance.tasks import deliver_stream

    for stream_id in AuditStream.dangerously_all_tenants.filter(
            tenant_id=tenant_id, state__in=[AuditStream.State.ACTIVE, AuditStream.State.FAILING]).values_list("pk", flat=True):
        deliver_stream.delay(stream_id)


# --- configuration (services) -------------------------------------------------------------


def stream_create(*, tenant_id: int, name: str, kind: str, url: str, secret: str, actor: str) -> AuditStream:
    if kind not in AuditStream.Kind.values:
        raise APIError("invalid_input", f"kind must be one of {', '.join(AuditStream.Kind.values)}")
    if not isinstance(name, str) or not name or len(name) > 100:
        raise APIError("invalid_input", "name is required (at most 100 characters)")
    if not isinstance(secret, str) or len(secret) < 8:
        raise APIError("invalid_input", "secret (token, API key or signing secret) of at least 8 characters is required")
    outbound.check_destination(url)
    with transaction.atomic():
        # Start at the head: a new stream sends what happens from now; replay sends history.
        stream = AuditStream(tenant_id=tenant_id, name=name, kind=kind, url=url, cursor_seq=_head_seq(tenant_id),
                             secret_encrypted=secrets.encrypt(secret))
        stream.save(force_insert=True)
        audit.forget_stream_list()
        audit.record("config.changed", tenant_id=tenant_id, actor=actor,
                     metadata={"change": "audit_stream_created", "stream": name, "kind": kind, "url": url})
    return stream


def stream_replay(*, stream: AuditStream, since, actor: str) -> AuditStream:
    """Re-send every event from `since` on (and resume a dead or paused stream).

    The cursor goes just before the first event stamped at or after `since`: events are
    sealed in commit order, which concurrent writers' timestamps may not follow exactly."""
    with transaction.atomic():
        first = (audit.sealed_events(stream.tenant_id).filter(ts__gte=since).order_by("seq")
                 .values_list("seq", flat=True).first())
        stream.cursor_seq = first - 1 if first else _head_seq(stream.tenant_id)
        stream.state = AuditStream.State.ACTIVE
        stream.failures = 0
        stream.save(update_fields=["cursor_seq", "state", "failures"])
        audit.record("config.changed", tenant_id=stream.tenant_id, actor=actor,
                     metadata={"change": "audit_stream_replay", "stream": stream.name, "since": since.isoformat()})
    return stream


def _head_seq(tenant_id: int) -> int:
    last = audit.head(tenant_id)
    return last["seq"] if last else 0


def stream_delete(*, stream: AuditStream, actor: str) -> None:
    with transaction.atomic():
        stream.delete()
        audit.record("config.changed", tenant_id=stream.tenant_id, actor=actor,
                     metadata={"change": "audit_stream_deleted", "stream": stream.name})
