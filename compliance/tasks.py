from datetime import timedelta

from celery import shared_task
from django.utils import timezone

from compliance import audit


def apply_audit_retention(*, now=None) -> dict:
    """Purge each tenant's audit rows older than its plan's audit_retention_days."""
    from policy.plans import plan_limits
    from tenants.models import Tenant

    now = now or timezone.now()
    purged = {}
    for tenant in Tenant.objects.exclude(status=Tenant.Status.PROVISIONING):
        days = plan_limits(tenant.plan).get("audit_retention_days")
        if not days:
            continue
        cutoff = now - timedelta(days=days)
        last = (audit.sealed_events(tenant.id).filter(ts__lt=cutoff)
                .order_by("-seq").values_list("seq", flat=True).first())
        if last:
            purged[tenant.slug] = audit.purge(tenant_id=tenant.id, up_to_seq=last, actor="system:retention",
                                              reason=f"retention: {days} days on plan {tenant.plan}")
    return purged


@shared_task(name="compliance.tasks.audit_retention")
def audit_retention() -> dict:
    return apply_audit_retention()


@shared_task(name="compliance.tasks.seal_audit")
def seal_audit() -> int:
    """Every few seconds: seal the events no writer saw sealed after its commit (it gave up
    waiting for a slow transaction that held the chain, or died in between)."""
    return sum(audit.seal_pending().values())


@shared_task(name="compliance.tasks.deliver_stream", bind=True, max_retries=None, acks_late=True)
def deliver_stream(self, stream_id: int) -> int:
    """Deliver a stream until it is caught up; on failure retry with exponential backoff."""
    from compliance import streams

    sent = 0
    while True:
        result = streams.deliver(stream_id)
        sent += result["sent"]
        if result.get("error"):
            if result["state"] == "failing":
                # Backoff, or until an open circuit breaker lets the next probe through.
                wait = max(2 ** min(result["failures"], 8), result.get("retry_after") or 0)
                raise self.retry(countdown=min(wait, 300))
            return sent
        if not result["more"]:
            return sent


@shared_task(name="compliance.tasks.sweep_streams")
def sweep_streams() -> int:
    """Every minute: wake streams with undelivered events (covers a lost wake-up)."""
    from compliance.models import AuditStream

    woken = 0
    for stream_id in AuditStream.dangerously_all_tenants.filter(state=AuditStream.State.ACTIVE).values_list("pk", flat=True):
        deliver_stream.delay(stream_id)
        woken += 1
    return woken


@shared_task(name="compliance.tasks.generate_evidence")
def generate_evidence(report_id: int) -> str:
    from compliance import evidence

    return evidence.generate(report_id).sha256
