"""Backup tasks: one backup, the nightly round, retention (scheduled in settings)."""
from __future__ import annotations

import logging

from celery import shared_task

logger = logging.getLogger(__name__)


@shared_task(name="runtime.backup_tasks.take_backup", acks_late=True)
def take_backup(backup_id: int) -> str:
    from runtime import backups
    from runtime.models import Backup

    backup = Backup.dangerously_all_tenants.filter(pk=backup_id, status=Backup.Status.RUNNING).first()
    if backup is None:
        return "gone"
    try:
        backups.run_backup(backup)
    except Exception:  # recorded on the row and alerted by run_backup
        return "failed"
    return "ok"


@shared_task(name="runtime.backup_tasks.nightly_backups")
def nightly_backups() -> dict:
    """Every active tenant, one after another; one failure does not stop the round."""
    from runtime import backups
    from tenants.models import Tenant

    result = {"ok": 0, "failed": 0}
    for tenant in Tenant.objects.filter(status=Tenant.Status.ACTIVE).order_by("id"):
        try:
            backups.backup_tenant(tenant=tenant, trigger="nightly", actor="system:nightly")
            result["ok"] += 1
        except Exception:
            result["failed"] += 1
    return result


@shared_task(name="runtime.backup_tasks.backup_retention")
def backup_retention() -> list[int]:
    from runtime import backups

    return backups.enforce_retention()
