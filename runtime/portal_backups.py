"""Portal runtime actions: the backups page (list with state, back up now, export,
restore into staging) and redeploy."""
from django.contrib import messages
from django.shortcuts import redirect, render
from django.views.decorators.http import require_POST

from runtime import backups
from runtime.api import backup_json
from runtime.models import Backup
from tenants.portal import _act, _can, portal_page, posted_id


@portal_page("backups:read")
def page(request):
    rows = [backup_json(b) for b in Backup.objects.all()[:30]]
    return render(request, "portal/backups.html", {
        "backups": rows, "running": any(r["status"] == "running" for r in rows),
        "can": {"create": _can(request, "backups:create"), "export": _can(request, "backups:export"),
                "restore": _can(request, "backups:restore")}})


def _tenant(request):
    from tenants.models import Tenant

    return Tenant.objects.get(pk=request.tenant.id)


@require_POST
@portal_page("backups:read")
def create(request):
    _act(request, "backups:create", lambda: backups.request_backup(
        tenant=_tenant(request), trigger="portal", actor=request.principal.actor),
         "Backup started; this page shows its state.")
    return redirect("org-backups")


@require_POST
@portal_page("backups:read")
def export(request):
    backup = Backup.objects.filter(pk=posted_id(request, "backup")).first()
    if backup is None:
        messages.error(request, "No such backup.")
        return redirect("org-backups")
    link = _act(request, "backups:export", lambda: backups.export_url(backup, request=request,
                                                                        actor=request.principal.actor), "")
    return redirect(link["url"]) if link else redirect("org-backups")


@require_POST
@portal_page("backups:read")
def restore(request):
    backup = Backup.objects.filter(pk=posted_id(request, "backup")).first()
    if backup is None:
        messages.error(request, "No such backup.")
        return redirect("org-backups")
    report = _act(request, "backups:restore", lambda: backups.restore_into_staging(
        backup, actor=request.principal.actor), "")
    if report:
        tables = sum(1 for c in report["checks"] if c["ok"])
        messages.success(request, f"Backup {backup.pk} restored into staging and verified: {tables} tables, row counts "
                                  "and checksums match. Nothing live was changed.")
    return redirect("org-backups")


@require_POST
@portal_page("tenant:read")
def redeploy(request):
    from runtime.deploy import tenant_redeploy

    _act(request, "deploy:redeploy", lambda: tenant_redeploy(tenant=_tenant(request), actor=request.principal.actor),
         "Redeployed: limits, domain and caches re-applied.")
    return redirect("org-home")

