"""Marketplace Celery tasks (scheduled in settings.CELERY_BEAT_SCHEDULE)."""
from __future__ import annotations

from celery import shared_task


@shared_task(name="marketplace.tasks.monthly_payouts")
def monthly_payouts(period: str | None = None) -> dict:
    """Pay partners for the month just ended (or `period`), then reconcile with Stripe."""
    from billing import stripe_api
    from marketplace import payouts

    if not stripe_api.enabled():
        return {"enabled": False}
    report = payouts.run_period(period or payouts.previous_period())
    return {**report.as_dict(), "reconcile": payouts.reconcile()}
