"""Celery tasks that run for a tenant.

    @tenant_task(name="workflows.tasks.run_workflow")
    def run_workflow(run_id): ...

    run_workflow.delay_for(tenant_id, run_id)   # or .apply_async(kwargs={"tenant_id": ...})

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
            with tenant_context(tenant):
                return fn(*args, **kwargs)

        def delay_for(tenant_id: int, *args, **kwargs):
            return task.apply_async(args=args, kwargs={**kwargs, "tenant_id": tenant_id})

        task.delay_for = delay_for
        return task

    return decorate
