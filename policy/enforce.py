"""The one entry point for permission checks: DRF, portal views and services call it.

`authorize()` asks the engine and, on a deny, writes `policy.deny` to the tenant's
audit trail (action, resource, rationale) and raises a 403 that carries the rationale.
"""
from __future__ import annotations

from django.db import transaction

from levqor.errors import APIError
from policy.engine import Decision, decide


def authorize(*, tenant_id: int, plan: str, role: str | None, action: str, actor: str,
              resource: str = "", request=None) -> Decision:
    decision = decide(plan=plan, role=role or "none", action=action)
    if not decision.allowed:
        from compliance import audit

        with transaction.atomic():
            audit.record("policy.deny", tenant_id=tenant_id, actor=actor, request=request,
                         metadata={"action": action, "resource": resource, "role": role, "plan": plan,
                                   "rationale": decision.rationale})
        raise APIError("policy_denied", decision.rationale, status_code=403,
                       details={"action": action, "rationale": decision.rationale})
    return decision
