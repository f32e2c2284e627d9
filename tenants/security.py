"""Recording attempts to cross the tenant boundary."""
from __future__ import annotations

from django.db import transaction

from compliance import audit
from compliance.alerts import alert_raise
from compliance.models import Alert


def cross_tenant_attempt(*, key, target_tenant_id: int, request=None) -> None:
    """A key of one tenant was used on another.

    The attacked tenant's trail names only the key's prefix; which tenant the key belongs
    to goes to platform staff, in an alert they alone see.
    """
    path = getattr(request, "path", "") if request is not None else ""
    method = getattr(request, "method", "") if request is not None else ""
    with transaction.atomic():
        audit.record("security.cross_tenant_attempt", tenant_id=target_tenant_id, actor=f"key:{key.prefix}",
                     metadata={"path": path, "method": method}, request=request)
        alert_raise(
            kind="security.cross_tenant_attempt", severity="critical", audience=Alert.Audience.STAFF,
            tenant_id=target_tenant_id,
            message=f"Key {key.prefix} of tenant {key.tenant_id} was used against tenant {target_tenant_id} ({method} {path}).",
            metadata={"key_prefix": key.prefix, "key_tenant_id": key.tenant_id, "target_tenant_id": target_tenant_id},
            dedupe_key=f"{key.prefix}->{target_tenant_id}",
        )
