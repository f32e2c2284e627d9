"""A tenant's federation settings, and what the portal and API show it."""
from __future__ import annotations

from django.db import transaction
from django.utils import timezone

from compliance import audit
from federation import kpis
from federation.aggregate import latest_release
from federation.models import INDUSTRIES, FederationMembership
from levqor.errors import APIError
from policy import quotas

INDUSTRY_CODES = frozenset(code for code, _ in INDUSTRIES)


def membership_of(tenant_id: int) -> FederationMembership:
    """The tenant's membership; an unsaved opted-out one when it never chose (nothing is shared by default)."""
    return FederationMembership.objects.filter(tenant_id=tenant_id).first() or FederationMembership(tenant_id=tenant_id)


def validated(opted_in, industry) -> tuple[bool, str]:
    """Strict types: a string where a boolean belongs is refused, not coerced."""
    if not isinstance(opted_in, bool):
        raise APIError("invalid_input", "opted_in must be true or false.", details={"field": "opted_in"})
    if industry is None:
        industry = ""
    if not isinstance(industry, str) or (industry and industry not in INDUSTRY_CODES):
        raise APIError("invalid_input", "industry must be one of the listed industries.",
                       details={"field": "industry", "choices": sorted(INDUSTRY_CODES)})
    return opted_in, industry


def federation_update(*, tenant_id: int, opted_in, industry, actor: str, request=None) -> FederationMembership:
    """Opt in or out (audited), and set the industry. Opting out takes effect for the next
    release: the aggregation reads memberships fresh and skips this tenant."""
    opted_in, industry = validated(opted_in, industry)
    with transaction.atomic():
        membership = membership_of(tenant_id)
        was_in, old_industry = membership.opted_in, membership.industry
        membership.opted_in, membership.industry = opted_in, industry
        if opted_in and not was_in:
            membership.opted_in_at = timezone.now()
        membership.save()
        if opted_in != was_in:
            audit.record("federation.opted_in" if opted_in else "federation.opted_out", tenant_id=tenant_id,
                         actor=actor, metadata={"industry": industry}, request=request)
        elif industry != old_industry:
            audit.record("config.changed", tenant_id=tenant_id, actor=actor,
                         metadata={"what": "federation.industry", "industry": industry}, request=request)
    return membership


def own_kpis(tenant_id: int, period: str) -> dict[str, float | None]:
    """The tenant's own figures (exact: they are its own). Needs its context."""
    raw = kpis.tenant_kpis(tenant_id, period)
    return {name: None if value is None else round(float(value), 4) for name, value in raw.items()}


def status(tenant_id: int) -> dict:
    """Opt-in state, the tenant's own KPIs for the latest release's period (else this
    month so far), and its industry's published percentiles beside them."""
    membership = membership_of(tenant_id)
    release = latest_release()
    period = release.period if release else quotas.period_of()
    own = own_kpis(tenant_id, period)
    groups = release.payload.get("groups", {}) if release else {}
    return {
        "opted_in": membership.opted_in,
        "industry": membership.industry or None,
        "size_band": kpis.size_band(int(own["active_members"] or 0)),
        "period": period,
        "own": own,
        "release": {"id": release.pk, "period": release.period, "published_at": release.created_at,
                    "epsilon": release.epsilon, "k": release.k} if release else None,
        "industry_percentiles": groups.get("industry", {}).get(membership.industry) if membership.industry else None,
        "industries": [{"code": code, "label": label} for code, label in INDUSTRIES],
    }
