"""Billing use cases the portal and the API share."""
from __future__ import annotations

from billing import stripe_api
from compliance import audit
from levqor.errors import APIError


def billing_summary(tenant_id: int) -> dict:
    """What an org admin sees about billing: plan, status, grace, what was reported."""
    from tenants.models import TenantBilling

    row = TenantBilling.objects.filter(tenant_id=tenant_id).first()
    return {
        "configured": stripe_api.enabled(),
        "plan": row.plan if row else None,
        "status": row.status if row else "none",
        "has_customer": bool(row and row.stripe_customer_id),
        "payment_failed_at": row.payment_failed_at if row else None,
        "grace_until": row.grace_until if row else None,
        "suspended_for_billing": bool(row and row.suspended_for_billing),
        "current_period_end": row.current_period_end if row else None,
        "reported_usage": (row.metered_usage_json or {}) if row else {},
    }


def portal_session(*, tenant_id: int, return_url: str, actor: str) -> str:
    """A Stripe Customer Portal session for the tenant's customer: plan changes, payment
    methods and invoices happen there, and come back to us as webhooks."""
    from tenants.models import TenantBilling

    if not stripe_api.enabled():
        raise APIError("billing_not_configured", "billing is not configured on this platform", status_code=409)
    row = TenantBilling.objects.filter(tenant_id=tenant_id).first()
    if row is None or not row.stripe_customer_id:
        raise APIError("no_billing_account", "this organization has no Stripe customer yet", status_code=409)
    session = stripe_api.call(stripe_api.client().v1.billing_portal.sessions.create, params={
        "customer": row.stripe_customer_id, "return_url": return_url})
    audit.record("billing.portal_opened", tenant_id=tenant_id, actor=actor, metadata={"session": session["id"]})
    return session["url"]


def move_subscription_to_plan(*, tenant, plan: str, actor: str) -> None:
    """A plan change made by staff (API, command) is made at Stripe first: the plan
    item of the tenant's subscription moves to the new plan's price, prorated. Otherwise the
    next subscription webhook would carry the old plan and undo the change. Stripe failing
    stops the change (503 `billing_unavailable`); billing off or no subscription: nothing to do.
    """
    from billing import catalog
    from tenants.models import TenantBilling

    if not stripe_api.enabled():
        return
    row = TenantBilling.dangerously_all_tenants.filter(tenant_id=tenant.id).first()
    if row is None or not row.stripe_subscription_id:
        return
    c = stripe_api.client()
    subscription = stripe_api.call(c.v1.subscriptions.retrieve, row.stripe_subscription_id)
    item = next((i for i in subscription["items"]["data"] if catalog.plan_for_price(i["price"])), None)
    new_price = catalog.price_ids()[catalog.plan_product(plan).lookup_key]
    if item is None:
        items = [{"price": new_price, "quantity": 1}]
    elif item["price"]["id"] == new_price:
        return
    else:
        items = [{"id": item["id"], "price": new_price, "quantity": 1}]
    stripe_api.call(c.v1.subscriptions.update, row.stripe_subscription_id, params={
        "items": items, "proration_behavior": "create_prorations",
        "metadata": {"levqor_plan": plan, "levqor_changed_by": actor[:100]}})
