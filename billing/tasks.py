"""Billing's Celery tasks (scheduled in settings.CELERY_BEAT_SCHEDULE)."""
from __future__ import annotations

from celery import shared_task


@shared_task(name="billing.tasks.sync_usage")
def sync_usage(window: str | None = None) -> dict:
    from datetime import date

    from billing import usage

    return usage.sync_usage(window=date.fromisoformat(window) if window else None)


@shared_task(name="billing.tasks.reconcile")
def reconcile(period: str | None = None) -> dict:
    from billing import usage

    return usage.reconcile(period=period)


@shared_task(name="billing.tasks.nightly")
def nightly() -> dict:
    """Yesterday's usage to Stripe, then reconciliation of the period, then Notion."""
    from billing import notion, usage

    synced = usage.sync_usage()
    period = synced.get("window", "").replace("-", "")[:6] or None
    return {"sync": synced, "reconcile": usage.reconcile(period=period), "notion": notion.push_summaries(period)}


@shared_task(name="billing.tasks.enforce_grace")
def enforce_grace() -> list[str]:
    from billing.webhooks import enforce_grace as enforce

    return enforce()
