"""Object-level grants where a role alone is not enough (django-guardian).

A member whose `workflow_scope` is "granted" may run only the workflows granted to
them (`workflows.run_workflow` on the object); everyone else is decided by role alone.
API keys carry a role only: object grants are for people.
"""
from __future__ import annotations

from django.contrib.auth import get_user_model
from django.db import transaction
from guardian.core import ObjectPermissionChecker
from guardian.shortcuts import assign_perm, remove_perm

from compliance import audit
from policy.enforce import deny

RUN_WORKFLOW = "workflows.run_workflow"


def _ref(obj):
    """A detached copy carrying only the key: guardian looks up content types and grants
    on the object's own database, which for a database-per-tenant tenant is not the one
    holding them (the grants live in the public schema; UUID keys keep them unambiguous)."""
    return type(obj)(pk=obj.pk)


def authorize_run(*, principal, ctx, workflow, request=None) -> None:
    if principal.kind != "user" or principal.workflow_scope != "granted":
        return
    user = get_user_model().objects.get(pk=principal.user_id)
    if not ObjectPermissionChecker(user).has_perm(RUN_WORKFLOW, _ref(workflow)):
        deny(tenant_id=ctx.id, plan=ctx.plan, role=principal.role, action="runs:create", actor=principal.actor,
             resource=f"workflow:{workflow.pk}", request=request,
             rationale=f"member may run only the workflows granted to them; {workflow.name!r} is not")


def workflow_grant(*, member, workflow, actor: str) -> None:
    with transaction.atomic():
        assign_perm(RUN_WORKFLOW, member.user, _ref(workflow))
        audit.record("config.changed", tenant_id=member.tenant_id, actor=actor,
                     metadata={"change": "workflow_grant", "member": member.user.email, "workflow": str(workflow.pk)})


def workflow_revoke(*, member, workflow, actor: str) -> None:
    with transaction.atomic():
        remove_perm(RUN_WORKFLOW, member.user, _ref(workflow))
        audit.record("config.changed", tenant_id=member.tenant_id, actor=actor,
                     metadata={"change": "workflow_revoke", "member": member.user.email, "workflow": str(workflow.pk)})
