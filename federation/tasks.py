"""The federation hub's Celery task."""
from celery import shared_task


@shared_task(name="federation.tasks.aggregate")
def aggregate(period: str | None = None) -> dict:
    """Publish a release for `period` (default: last full month). A refusal for budget is
    an answer, not a failure: retrying would be refused again."""
    from federation.aggregate import BudgetExhausted, aggregate as build

    try:
        release = build(period)
    except BudgetExhausted as exc:
        return {"published": False, "reason": "budget_exhausted", "spent": exc.spent, "cap": exc.cap}
    return {"published": True, "release": release.pk, "period": release.period, "epsilon": release.epsilon}
