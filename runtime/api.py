"""The runtime app's tenant API: backups (list, take, export, restore), redeploy and health."""
from __future__ import annotations

from django.http import FileResponse
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import extend_schema
from rest_framework import status
from rest_framework.response import Response

from compliance import audit
from levqor.errors import APIError, error_response
from runtime import backups
from runtime.models import Backup
from runtime.storage import region_storage
from tenants.api_base import TenantAPIView
from tenants.context import current_tenant


def backup_json(backup: Backup) -> dict:
    restore = (backup.manifest_json or {}).get("restore") or {}
    return {
        "id": backup.pk, "status": backup.status, "trigger": backup.trigger, "created_at": backup.created_at,
        "expires_at": backup.expires_at, "size_bytes": backup.size_bytes, "sha256": backup.checksum_sha256,
        "encrypted": backup.encrypted, "duration_ms": backup.duration_ms, "error": backup.error or None,
        "tables": [{"table": t["table"], "scope": t["scope"], "rows": t["rows"]}
                   for t in (backup.manifest_json or {}).get("tables", [])],
        "restore": {k: restore.get(k) for k in ("verified", "at", "replaced_live", "staging_schema")} if restore else None,
    }


def _backup_or_404(backup_id) -> Backup:
    backup = Backup.objects.filter(pk=backup_id).first()  # tenant-scoped manager: another tenant's id is 404
    if backup is None:
        raise APIError("not_found", "no such backup", status_code=404)
    return backup


def _tenant():
    from tenants.models import Tenant

    return Tenant.objects.get(pk=current_tenant().id)


class OrgBackups(TenantAPIView):
    policy_actions = {"GET": "backups:read", "POST": "backups:create"}

    @extend_schema(request=None, responses=OpenApiTypes.OBJECT)
    def get(self, request):
        return Response({"results": [backup_json(b) for b in Backup.objects.all()[:50]]})

    @extend_schema(request=None, responses={202: OpenApiTypes.OBJECT})
    def post(self, request):
        backup = backups.request_backup(tenant=_tenant(), trigger="api", actor=request.principal.actor)
        return Response(backup_json(backup), status=status.HTTP_202_ACCEPTED)


class OrgBackupDetail(TenantAPIView):
    policy_actions = {"GET": "backups:read"}

    @extend_schema(request=None, responses=OpenApiTypes.OBJECT)
    def get(self, request, backup_id: int):
        return Response(backup_json(_backup_or_404(backup_id)))


class OrgBackupExport(TenantAPIView):
    policy_actions = {"POST": "backups:export"}

    @extend_schema(request=None, responses={201: OpenApiTypes.OBJECT})
    def post(self, request, backup_id: int):
        link = backups.export_url(_backup_or_404(backup_id), request=request, actor=request.principal.actor)
        return Response(link, status=status.HTTP_201_CREATED)


class OrgBackupRestore(TenantAPIView):
    """`{"mode": "staging"}` (default) restores into staging and verifies;
    `{"mode": "replace"}` then makes that verified restore the live data."""

    policy_actions = {"POST": "backups:restore"}

    @extend_schema(request=OpenApiTypes.OBJECT, responses=OpenApiTypes.OBJECT)
    def post(self, request, backup_id: int):
        body = request.data if isinstance(request.data, dict) else {}
        mode = body.get("mode", "staging")
        if mode not in ("staging", "replace"):
            raise APIError("invalid_input", "mode must be staging or replace", details={"fields": {"mode": [
                "staging or replace"]}})
        backup = _backup_or_404(backup_id)
        if mode == "staging":
            report = backups.restore_into_staging(backup, actor=request.principal.actor)
        else:
            report = backups.replace_live(backup, actor=request.principal.actor)
        return Response({k: v for k, v in report.items() if k != "actor"})


def backup_download(request, token: str):
    """GET /backups/<token>: the signed, expiring, single-use link is the credential."""
    backup, why = backups.backup_for_token(token)
    if backup is None:
        messages = {"expired": "This download link has expired.", "used": "This download link was already used.",
                    "invalid": "This download link is invalid."}
        return error_response(410 if why in ("expired", "used") else 404, f"link_{why}", messages[why])
    try:
        handle = region_storage(backup.region).open(backup.storage_name, "rb")
    except FileNotFoundError:
        return error_response(410, "backup_missing", "This backup's file is no longer stored.")
    audit.record("backup.exported", tenant_id=backup.tenant_id, actor=f"link:backup-{backup.pk}", request=request,
                 metadata={"backup_id": backup.pk, "sha256": backup.checksum_sha256})
    suffix = ".tar.gz.enc" if backup.encrypted else ".tar.gz"
    return FileResponse(handle, as_attachment=True, filename=f"levqor-backup-{backup.tenant_id}-{backup.pk}{suffix}")


class OrgRedeploy(TenantAPIView):
    """POST /api/org/redeploy: re-apply the tenant's runtime configuration."""

    policy_actions = {"POST": "deploy:redeploy"}

    @extend_schema(request=None, responses=OpenApiTypes.OBJECT)
    def post(self, request):
        from runtime.deploy import tenant_redeploy

        runtime = tenant_redeploy(tenant=_tenant(), actor=request.principal.actor)
        return Response({"last_deploy_at": runtime.last_deploy_at, "limits": runtime.limits_json,
                         "domain": runtime.domain})


class OrgHealth(TenantAPIView):
    """GET /api/org/health: the tenant's own health checks (storage, backup, migrations, keys)."""

    policy_actions = {"GET": "tenant:read"}

    @extend_schema(request=None, responses=OpenApiTypes.OBJECT)
    def get(self, request):
        from runtime.health import tenant_health

        return Response(tenant_health(_tenant()))
