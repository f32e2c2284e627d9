"""Provisioning step 5: the tenant's Stripe customer and subscription.

Until Stripe integration lands (the billing issue), the step records the plan in
`tenant_billing` and creates nothing at Stripe; its interface and place in the
sequence are final, so the later change is confined to this module.
"""
from tenants.provisioning import Provisioning, register_step


def _run(p: Provisioning) -> None:
    from tenants.models import TenantBilling

    TenantBilling.dangerously_all_tenants.update_or_create(tenant=p.tenant, defaults={"plan": p.tenant.plan})


def _undo(p: Provisioning) -> None:
    from tenants.models import TenantBilling

    if p.tenant is not None and p.tenant.pk:
        TenantBilling.dangerously_all_tenants.filter(tenant_id=p.tenant.pk).delete()


def register() -> None:
    register_step("billing", order=50, run=_run, compensate=_undo)
