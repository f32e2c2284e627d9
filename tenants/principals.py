"""Who is calling: a tenant key, a platform staff key, or a signed-in user."""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Principal:
    kind: str  # "tenant_key" | "platform_key" | "user"
    actor: str  # what the audit trail records: "key:lvq_ab12cd34", "user:ann@example.com", "staff-key:..."
    tenant_id: int | None = None  # the tenant a key is bound to
    role: str | None = None
    is_staff: bool = False
    key_id: int | None = None
    user_id: int | None = None
    workflow_scope: str = "all"  # "granted": runs limited to workflows granted by django-guardian

    # DRF and Django treat request.user as authenticated when this is true.
    is_authenticated: bool = True
    is_active: bool = True
    is_anonymous: bool = False

    @property
    def pk(self):
        return self.key_id or self.user_id


def principal_for(request, tenant_id: int | None = None) -> Principal | None:
    """The caller as a Principal, with the role they hold on `tenant_id` if any."""
    user = getattr(request, "user", None)
    if isinstance(user, Principal):
        return user
    if user is None or not getattr(user, "is_authenticated", False):
        return None
    role = None
    if tenant_id is not None:
        from tenants.models import TenantUser

        membership = TenantUser.dangerously_all_tenants.filter(tenant_id=tenant_id, user_id=user.pk).only(
            "role", "workflow_scope").first()
        role = membership.role if membership else None
        scope = membership.workflow_scope if membership else "all"
    else:
        scope = "all"
    return Principal(kind="user", actor=f"user:{user.get_username()}", tenant_id=tenant_id if role else None,
                     role=role, is_staff=bool(user.is_staff), user_id=user.pk, workflow_scope=scope)
