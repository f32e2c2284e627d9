"""The federation hub's Celery task."""
from celery import shared_task


@shared_task(name="federation.tasks.aggregate")
def aggregate(period: str | None = None) -> dict:
    """Publish a release for `period` (default: last full month). A refusal for budget is
    an answer, not a failure: retrying would be refused again. It is raised to staff,
    because no one watches the scheduled run and benchmarks stop until the cap is changed."""
    from federation.aggregate import BudgetExhausted, aggregate as build

    try:
        release = build(period)
    except BudgetExhausted as exc:
        alert_budget_exhausted(exc)
        return {"published": False, "reason": "budget_exhausted", "spent": exc.spent, "cap": exc.cap}
    return {"published": True, "release": release.pk, "period": release.period, "epsilon": release.epsilon}


def alert_budget_exhausted(exc) -> None:
    """One open staff alert per cap: every later refusal at the same cap finds it (dedupe);
    raising the cap and exhausting it again alerts anew. Staff only: the message is about
    the platform's privacy budget, not any one tenant."""
    from compliance.alerts import alert_raise
    from compliance.models import Alert

    alert_raise(kind="federation.budget_exhausted", audience=Alert.Audience.STAFF, severity="warning",
                message=f"Federation benchmarks are no longer published: {exc}. Raise "
                        "LEVQOR_FEDERATION_EPSILON_CAP (a privacy decision) or stop the monthly release.",
                metadata={"spent": exc.spent, "wanted": exc.wanted, "cap": exc.cap},
                dedupe_key=f"cap:{exc.cap:g}")
