"""The one entry point for permission checks: DRF, portal views and services call it.

`authorize()` asks the engine and, on a deny, writes `policy.deny` to the tenant's
audit trail (action, resource, rationale) and raises a 403 that carries the rationale.
"""
from __future__ import annotations

from django.db import transaction

from levqor.errors import APIError
from policy.engine import Decision, decide


def authorize(*, tenant_id: int, plan: str, role: str | None, action: str, actor: str,
              resource: str = "", request=None, features: frozenset = frozenset()) -> Decision:
    """`features`: what the tenant holds beyond its plan (the context's `granted`); a
    feature gate is met by the plan or by these."""
    decision = decide(plan=plan, role=role or "none", action=action, granted=features)
    if not decision.allowed:
        deny(tenant_id=tenant_id, plan=plan, role=role, action=action, actor=actor, resource=resource,
             rationale=decision.rationale, request=request)
    return decision


def deny(*, tenant_id: int, plan: str, role: str | None, action: str, actor: str, resource: str, rationale: str,
         request=None):
    """Record a deny in the tenant's trail and refuse with the rationale."""
    from compliance import audit

    with transaction.atomic():
        audit.record("policy.deny", tenant_id=tenant_id, actor=actor, request=request,
                     metadata={"action": action, "resource": resource, "role": role, "plan": plan,
                               "rationale": rationale})
    raise APIError("policy_denied", rationale, status_code=403, details={"action": action, "rationale": rationale})
