from datetime import timedelta

from celery import shared_task
from django.utils import timezone

from compliance import audit
from compliance.models import AuditEvent


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
        last = (AuditEvent.dangerously_all_tenants.filter(tenant_id=tenant.id, ts__lt=cutoff)
                .order_by("-seq").values_list("seq", flat=True).first())
        if last:
            purged[tenant.slug] = audit.purge(tenant_id=tenant.id, up_to_seq=last, actor="system:retention",
                                              reason=f"retention: {days} days on plan {tenant.plan}")
    return purged


@shared_task(name="compliance.tasks.audit_retention")
def audit_retention() -> dict:
    return apply_audit_retention()
