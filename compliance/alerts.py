"""Raising alerts. Delivery to channels is the runtime app's job; this stores them."""
from __future__ import annotations

import logging

from django.dispatch import Signal

from compliance.models import Alert

logger = logging.getLogger("levqor.alerts")
# Sent with `alert` when a new alert is stored; runtime/alerting.py delivers it after commit.
alert_raised = Signal()


def alert_raise(*, kind: str, message: str, tenant_id: int | None = None, severity: str = "warning",
                audience: str = Alert.Audience.TENANT, metadata: dict | None = None, dedupe_key: str = "") -> Alert:
    if dedupe_key:
        existing = Alert.objects.filter(kind=kind, dedupe_key=dedupe_key, resolved_at__isnull=True).first()
        if existing:
            return existing
    alert = Alert.objects.create(kind=kind, message=message, tenant_id=tenant_id, severity=severity,
                                 audience=audience, metadata_json=metadata or {}, dedupe_key=dedupe_key)
    logger.warning("alert %s tenant=%s: %s", kind, tenant_id, message)
    alert_raised.send(sender=Alert, alert=alert)
    return alert


def alert_resolve(*, kind: str, dedupe_key: str) -> int:
    """Close the open alert of `kind` for `dedupe_key` once its condition has cleared, so
    the next occurrence alerts again; returns how many were closed."""
    from django.utils import timezone

    return Alert.objects.filter(kind=kind, dedupe_key=dedupe_key, resolved_at__isnull=True).update(
        resolved_at=timezone.now())
