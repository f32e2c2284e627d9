"""Storage lifecycle (spec section 17): stored files expire per plan, and backups must
stay fresh.

Rules, from the tenant's plan now (policy/policies.json), so a downgrade shortens what is
kept from the next run on:
- backups (what a backup export downloads): `backup_retention_days` after they were
  taken, or at their own `expires_at` (set by the plan of the day they were taken),
  whichever comes first;
- Evidence PDFs: `evidence_retention_days` after they were generated.

Each run (`storage_lifecycle` nightly; backups also hourly through `backup_retention`)
marks the rows `expired`, writes an ExpiredFile record per file and one
`storage.expired` event in the tenant's audit trail, in one transaction per tenant,
then deletes the files from the region's storage (django-storages). A delete that fails
leaves an orphaned file, never a row pointing at a missing one as if it were there; an
expired backup's link and an expired report's link answer a clean 4xx.
Tenants being deleted are left to the purge, which removes everything of theirs.

Freshness: `check_stale_backups` raises `backup.stale` (staff) for each active tenant
older than LEVQOR_KPI_BACKUP_FRESH_HOURS without an OK backup that young: the nightly
round did not run, or failed for it without anyone noticing. Once per tenant until
resolved; a fresh backup resolves it on the next check.
"""
from __future__ import annotations

import logging
from datetime import datetime, timedelta

from django.conf import settings
from django.db import transaction
from django.db.models import Max, Q
from django.utils import timezone

from compliance import audit
from compliance.alerts import alert_raise
from compliance.models import Alert, EvidenceReport
from policy.plans import plan_limits
from runtime.models import Backup, ExpiredFile
from runtime.storage import region_storage
from tenants.models import Tenant

logger = logging.getLogger(__name__)
ACTOR = "system:lifecycle"
DEFAULT_BACKUP_DAYS = 7  # for a plan that names no backup_retention_days
DEFAULT_EVIDENCE_DAYS = 365


def _live_tenants():
    return Tenant.objects.exclude(status__in=[Tenant.Status.DELETED, Tenant.Status.PROVISIONING])


def expire_files(*, now: datetime | None = None) -> dict:
    """Apply both rules to every live tenant. Returns {"backups": [...ids], "evidence": [...ids]}."""
    now = now or timezone.now()
    result = {"backups": [], "evidence": []}
    for tenant in _live_tenants().order_by("id"):
        backups, reports = _expire_tenant(tenant, now)
        result["backups"] += backups
        result["evidence"] += reports
    return result


def expire_backups(*, now: datetime | None = None) -> list[int]:
    """The backup rule only (the hourly `backup_retention` task). Returns the backup ids."""
    now = now or timezone.now()
    expired = []
    for tenant in _live_tenants().filter(id__in=Backup.dangerously_all_tenants.filter(
            status=Backup.Status.OK).values("tenant_id")).order_by("id"):
        expired += _expire_tenant(tenant, now, evidence=False)[0]
    return expired


def _expire_tenant(tenant: Tenant, now: datetime, *, evidence: bool = True) -> tuple[list[int], list[int]]:
    limits = plan_limits(tenant.plan)
    backup_days = limits.get("backup_retention_days") or DEFAULT_BACKUP_DAYS
    evidence_days = limits.get("evidence_retention_days") or DEFAULT_EVIDENCE_DAYS
    backups = list(Backup.dangerously_all_tenants.filter(tenant_id=tenant.id, status=Backup.Status.OK).filter(
        Q(expires_at__lte=now) | Q(created_at__lte=now - timedelta(days=backup_days))))
    reports = list(EvidenceReport.dangerously_all_tenants.filter(
        tenant_id=tenant.id, status=EvidenceReport.Status.READY,
        created_at__lte=now - timedelta(days=evidence_days))) if evidence else []
    if not backups and not reports:
        return [], []
    records = ([_record(tenant, ExpiredFile.Kind.BACKUP, b.pk, b.region, b.storage_name, b.size_bytes, backup_days,
                        b.created_at) for b in backups]
               + [_record(tenant, ExpiredFile.Kind.EVIDENCE, r.pk, tenant.region, r.path, 0, evidence_days, r.created_at)
                  for r in reports])
    with transaction.atomic():
        Backup.dangerously_all_tenants.filter(pk__in=[b.pk for b in backups]).update(status=Backup.Status.EXPIRED)
        EvidenceReport.dangerously_all_tenants.filter(pk__in=[r.pk for r in reports]).update(status=EvidenceReport.Status.EXPIRED)
        ExpiredFile.objects.bulk_create(records, ignore_conflicts=True)
        audit.record("storage.expired", tenant_id=tenant.id, actor=ACTOR, metadata={
            "plan": tenant.plan, "backups": len(backups), "evidence_reports": len(reports),
            "bytes": sum(b.size_bytes for b in backups), "backup_retention_days": backup_days,
            "evidence_retention_days": evidence_days})
    for backup in backups:
        _delete(region_storage(backup.region), backup.storage_name)
    if reports:
        from compliance import evidence as evidence_files

        for report in reports:
            _delete(evidence_files.region_storage(tenant.region), report.path)
    return [b.pk for b in backups], [r.pk for r in reports]


def _record(tenant, kind, object_id, region, name, size, days, created_at) -> ExpiredFile:
    return ExpiredFile(tenant_id=tenant.id, kind=kind, object_id=object_id, region=region, storage_name=name or "",
                       size_bytes=size or 0, plan=tenant.plan, retention_days=days, created_at=created_at)


def _delete(storage, name: str) -> None:
    if not name:
        return
    try:
        storage.delete(name)
    except Exception:  # recorded as expired; the file is an orphan for the operator to sweep
        logger.exception("storage lifecycle: could not delete %s", name)


# --- backup freshness --------------------------------------------------------------------------


def check_stale_backups(*, now: datetime | None = None) -> list[int]:
    """Raise `backup.stale` for active tenants without a fresh OK backup; resolve it for
    those that have one again. Returns the ids of the tenants alerted now."""
    now = now or timezone.now()
    fresh_since = now - timedelta(hours=settings.LEVQOR_KPI_BACKUP_FRESH_HOURS)
    latest = dict(Backup.dangerously_all_tenants.filter(status=Backup.Status.OK).values("tenant_id")
                  .annotate(at=Max("created_at")).values_list("tenant_id", "at"))
    alerted = []
    for tenant in Tenant.objects.filter(status=Tenant.Status.ACTIVE, created_at__lte=fresh_since).order_by("id"):
        last = latest.get(tenant.id)
        key = f"{tenant.id}:stale"
        if last is not None and last >= fresh_since:
            Alert.objects.filter(kind="backup.stale", dedupe_key=key, resolved_at__isnull=True).update(resolved_at=now)
            continue
        if Alert.objects.filter(kind="backup.stale", dedupe_key=key, resolved_at__isnull=True).exists():
            continue
        since = f"since {last:%Y-%m-%d %H:%M} UTC" if last else "ever"
        alert_raise(kind="backup.stale", tenant_id=tenant.id, audience=Alert.Audience.STAFF, severity="critical",
                    message=f"{tenant.slug} has had no successful backup {since} (limit: "
                            f"{settings.LEVQOR_KPI_BACKUP_FRESH_HOURS:g} h): check the nightly backups.",
                    metadata={"last_ok_backup": last.isoformat() if last else None,
                              "fresh_hours": settings.LEVQOR_KPI_BACKUP_FRESH_HOURS}, dedupe_key=key)
        alerted.append(tenant.id)
    return alerted
