from celery import shared_task
from django.utils import timezone

from tenants import services
from tenants.models import Tenant


def purge_due_tenants() -> list[str]:
    due = Tenant.objects.filter(status=Tenant.Status.DELETING, purge_after__lte=timezone.now())
    purged = []
    for tenant in due:
        services.tenant_purge(tenant=tenant, actor="system:purge")
        purged.append(tenant.slug)
    return purged


@shared_task(name="tenants.tasks.purge_deleted_tenants")
def purge_deleted_tenants() -> list[str]:
    return purge_due_tenants()


@shared_task(name="tenants.tasks.reap_stalled_provisioning")
def reap_stalled_provisioning() -> list[str]:
    from tenants.provisioning import reap_stalled

    return reap_stalled()
