"""Provisioning step 5: the tenant's Stripe customer and subscription.

With billing on, the step creates the customer (metadata: tenant id and slug) and one
subscription holding the plan's monthly price and the three metered prices, with
Stripe idempotency keys named after the tenant id, so a retried step never makes a
second customer. The billing cycle is anchored on the 1st of the month, the same
calendar month the quota counters use, so the usage a tenant sees against its limits
is the usage its invoice bills. Its compensation cancels the subscription and deletes
the customer (deleting a customer cancels its subscriptions too at Stripe).

With billing off, the step records the plan with status "none" and calls nobody.
"""
from __future__ import annotations

import logging

from tenants.provisioning import Provisioning, register_step

logger = logging.getLogger(__name__)


def _run(p: Provisioning) -> None:
    from billing import catalog, stripe_api
    from tenants.models import TenantBilling

    tenant = p.tenant
    billing, _ = TenantBilling.dangerously_all_tenants.update_or_create(tenant=tenant, defaults={"plan": tenant.plan})
    if not stripe_api.enabled():
        return
    prices = catalog.price_ids()
    c = stripe_api.client()
    customer = stripe_api.call(c.v1.customers.create, params={
        "name": tenant.name, "email": tenant.admin_email or None, "description": f"Levqor tenant {tenant.slug}",
        "metadata": {"levqor_tenant_id": str(tenant.id), "levqor_slug": tenant.slug},
    }, options={"idempotency_key": f"levqor-tenant-{tenant.id}-customer"})
    p.extras["stripe_customer_id"] = customer["id"]
    billing.stripe_customer_id = customer["id"]
    billing.save(update_fields=["stripe_customer_id", "updated_at"])
    items = [{"price": prices[catalog.plan_product(tenant.plan).lookup_key], "quantity": 1}]
    items += [{"price": prices[m.lookup_key]} for m in catalog.METERED]
    subscription = stripe_api.call(c.v1.subscriptions.create, params={
        "customer": customer["id"], "items": items,
        "billing_cycle_anchor_config": {"day_of_month": 1}, "proration_behavior": "create_prorations",
        "metadata": {"levqor_tenant_id": str(tenant.id)},
    }, options={"idempotency_key": f"levqor-tenant-{tenant.id}-subscription"})
    p.extras["stripe_subscription_id"] = subscription["id"]
    billing.stripe_subscription_id = subscription["id"]
    billing.status = TenantBilling.Status.ACTIVE
    billing.current_period_end = _period_end(subscription)
    billing.save(update_fields=["stripe_subscription_id", "status", "current_period_end", "updated_at"])


def _period_end(subscription) -> object:
    from datetime import datetime, timezone

    end = subscription.get("current_period_end")
    if end is None:
        items = (subscription.get("items") or {}).get("data") or []
        end = items[0].get("current_period_end") if items else None
    return datetime.fromtimestamp(end, tz=timezone.utc) if end else None


def _undo(p: Provisioning) -> None:
    import stripe

    from billing import stripe_api
    from tenants.models import TenantBilling

    if p.tenant is None or not p.tenant.pk:
        return
    row = TenantBilling.dangerously_all_tenants.filter(tenant_id=p.tenant.pk).first()
    customer_id = p.extras.get("stripe_customer_id") or (row.stripe_customer_id if row else "")
    subscription_id = p.extras.get("stripe_subscription_id") or (row.stripe_subscription_id if row else "")
    if stripe_api.enabled() and (customer_id or subscription_id):
        c = stripe_api.client()
        if subscription_id:
            try:
                c.v1.subscriptions.cancel(subscription_id)
            except stripe.InvalidRequestError as exc:
                if not stripe_api.is_missing(exc):
                    raise
        if customer_id:
            try:
                c.v1.customers.delete(customer_id)
            except stripe.InvalidRequestError as exc:
                if not stripe_api.is_missing(exc):
                    raise
        logger.info("provisioning of %s rolled back: Stripe customer %s deleted", p.tenant.slug, customer_id)
    TenantBilling.dangerously_all_tenants.filter(tenant_id=p.tenant.pk).delete()


def register() -> None:
    register_step("billing", order=50, run=_run, compensate=_undo)
