"""Members and invitations: every write, with its audit event."""
from __future__ import annotations

from datetime import timedelta

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core import signing
from django.core.mail import send_mail
from django.db import transaction
from django.utils import timezone

from compliance import audit
from levqor.errors import APIError
from tenants.models import ROLES, Invitation, Tenant, TenantUser

INVITATION_SALT = "levqor.invitation"
INVITATION_DAYS = 7


def invitation_link(invitation: Invitation) -> str:
    token = signing.dumps({"i": invitation.pk, "t": invitation.tenant_id}, salt=INVITATION_SALT)
    return f"/org/invite/{token}"


def member_invite(*, tenant: Tenant, email: str, role: str, actor: str, base_url: str = "") -> Invitation:
    email = (email or "").strip().lower()
    if "@" not in email or len(email) > 254:
        raise APIError("invalid_input", "email must be an email address")
    if role not in ROLES:
        raise APIError("invalid_input", f"role must be one of {', '.join(ROLES)}")
    if TenantUser.dangerously_all_tenants.filter(tenant=tenant, user__email__iexact=email).exists():
        raise APIError("already_member", f"{email} is already a member", status_code=409)
    with transaction.atomic():
        invitation = Invitation(tenant=tenant, email=email, role=role, invited_by=actor)
        invitation.save(force_insert=True)
        audit.record("member.invited", tenant_id=tenant.id, actor=actor, metadata={"email": email, "role": role})
        link = base_url + invitation_link(invitation)
        transaction.on_commit(lambda: send_mail(
            f"You are invited to {tenant.name} on Levqor",
            f"{actor} invited you to join {tenant.name} as {role}.\n\nAccept within {INVITATION_DAYS} days: {link}\n",
            settings.DEFAULT_FROM_EMAIL, [email], fail_silently=True))
    return invitation


def invitation_for_token(token: str) -> Invitation | None:
    try:
        data = signing.loads(token, salt=INVITATION_SALT, max_age=INVITATION_DAYS * 86400)
    except signing.BadSignature:
        return None
    return Invitation.dangerously_all_tenants.select_related("tenant").filter(
        pk=data.get("i"), tenant_id=data.get("t")).first()


def invitation_accept(*, invitation: Invitation, user) -> TenantUser:
    if invitation.accepted_at or invitation.revoked_at:
        raise APIError("invitation_used", "This invitation has already been used.", status_code=410)
    if invitation.created_at < timezone.now() - timedelta(days=INVITATION_DAYS):
        raise APIError("invitation_expired", "This invitation has expired.", status_code=410)
    if (user.email or "").lower() != invitation.email:
        raise APIError("invitation_other_email", f"This invitation is for {invitation.email}; sign in with that address.",
                       status_code=403)
    with transaction.atomic():
        locked = Invitation.dangerously_all_tenants.select_for_update().get(pk=invitation.pk)
        if locked.accepted_at:
            raise APIError("invitation_used", "This invitation has already been used.", status_code=410)
        locked.accepted_at = timezone.now()
        locked.save(update_fields=["accepted_at"])
        member, _ = TenantUser.dangerously_all_tenants.get_or_create(tenant_id=invitation.tenant_id, user=user,
                                                                    defaults={"role": invitation.role})
        audit.record("member.role_changed", tenant_id=invitation.tenant_id, actor=f"user:{user.email}",
                     metadata={"email": user.email, "from": None, "to": invitation.role, "via": "invitation"})
    return member


def _owners_left(tenant_id: int, excluding: int) -> int:
    return TenantUser.dangerously_all_tenants.filter(tenant_id=tenant_id, role="owner").exclude(pk=excluding).count()


def member_change_role(*, member: TenantUser, role: str, actor: str) -> TenantUser:
    if role not in ROLES:
        raise APIError("invalid_input", f"role must be one of {', '.join(ROLES)}")
    with transaction.atomic():
        member = TenantUser.dangerously_all_tenants.select_for_update().get(pk=member.pk)
        if member.role == "owner" and role != "owner" and _owners_left(member.tenant_id, member.pk) == 0:
            raise APIError("last_owner", "The last owner cannot be demoted; make someone else owner first.",
                           status_code=409)
        previous = member.role
        member.role = role
        member.save(update_fields=["role"])
        audit.record("member.role_changed", tenant_id=member.tenant_id, actor=actor,
                     metadata={"email": member.user.email, "from": previous, "to": role})
    return member


def member_remove(*, member: TenantUser, actor: str) -> None:
    with transaction.atomic():
        member = TenantUser.dangerously_all_tenants.select_for_update().get(pk=member.pk)
        if member.role == "owner" and _owners_left(member.tenant_id, member.pk) == 0:
            raise APIError("last_owner", "The last owner cannot be removed.", status_code=409)
        email = member.user.email
        member.delete()
        audit.record("member.removed", tenant_id=member.tenant_id, actor=actor, metadata={"email": email})


def memberships_of(user) -> list[TenantUser]:
    return list(TenantUser.dangerously_all_tenants.select_related("tenant").filter(
        user=user, tenant__status__in=[Tenant.Status.ACTIVE, Tenant.Status.SUSPENDED]).order_by("tenant__name"))


def user_for_email(email: str):
    return get_user_model().objects.filter(email__iexact=email).first()
