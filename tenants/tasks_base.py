"""Celery tasks that run for a tenant.

    @tenant_task(name="workflows.tasks.run_workflow")
    def run_workflow(run_id): ...

    run_workflow.delay_for(tenant_id, run_id)   # or .apply_for(tenant_id, args, kwargs, queue=...)

Dispatched this way, the plan's caps apply (runtime/capacity.py): past its queue share the
task waits in the tenant's holding list, and a tenant whose worker pool is at its cap
runs no more tasks at once. (`.apply_async(kwargs={"tenant_id": ...})` skips the share.)

The tenant travels as `tenant_id` in the message (an id, never an object) and the task
body runs inside `tenant_context()`. A suspended or deleted tenant's task is dropped.
Tasks that are not tenant tasks have no context, so any tenant data they touch raises.
"""
from __future__ import annotations

import functools
import logging

from celery import shared_task

logger = logging.getLogger(__name__)


class TenantGone(Exception):
    pass


# The plan's autoscale caps (runtime/capacity.py, above this app) hook in here: the gate's
# `dispatch` sends or holds a tenant's task, `start` takes a slot of the tenant's worker
# pool (or holds the task: it is then not run here) and `finish` frees it. No gate: no caps.
_gate = None


def register_gate(gate) -> None:
    global _gate
    _gate = gate


def tenant_task(**options):
    def decorate(fn):
        @shared_task(**options)
        @functools.wraps(fn)
        def task(*args, tenant_id: int, **kwargs):
            from tenants.context import tenant_context
            from tenants.models import Tenant

            tenant = Tenant.objects.filter(pk=tenant_id).first()
            if tenant is None or tenant.status not in (Tenant.Status.ACTIVE, Tenant.Status.PROVISIONING):
                logger.info("dropping %s for tenant %s: tenant is %s", options.get("name", fn.__name__), tenant_id,
                            tenant.status if tenant else "gone")
                return None
            slot = _gate.start(task, tenant_id, args, kwargs) if _gate is not None else ""
            if slot is None:
                return None  # the tenant's pool is at its cap: the task waits in its holding list
            try:
                with tenant_context(tenant):
                    return fn(*args, **kwargs)
            finally:
                if slot:
                    _gate.finish(tenant_id, slot)

        def apply_for(tenant_id: int, args=(), kwargs=None, **apply_options):
            if _gate is not None:
                return _gate.dispatch(task, tenant_id, args, kwargs, **apply_options)
            return task.apply_async(args=args, kwargs={**(kwargs or {}), "tenant_id": tenant_id}, **apply_options)

        def delay_for(tenant_id: int, *args, **kwargs):
            return apply_for(tenant_id, args, kwargs)

        task.delay_for = delay_for
        task.apply_for = apply_for
        return task

    return decorate
