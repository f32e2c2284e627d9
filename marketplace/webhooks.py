"""Stripe events about marketplace orders, through billing's webhook endpoint.

Registered with `billing.webhooks.register_handler` (billing does not import the
marketplace). billing has verified the signature, found the tenant from the event's
customer and opened the transaction that records the event id, so a redelivery changes
nothing. Each handler finds its order by the reference we put in the metadata (or by the
Stripe ids saved on the order), checks that the order belongs to the customer's tenant,
and enters that tenant's context: the webhook is an entry point, like a request.
"""
from __future__ import annotations

import uuid
from datetime import datetime
from datetime import timezone as dt_timezone

from django.utils import timezone

from tenants.context import tenant_context

ACTOR = "stripe:webhook"


def _order(billing, *, reference: str | None = None, **stripe_ids):
    from marketplace.models import TenantOrder

    orders = TenantOrder.dangerously_all_tenants.select_related("listing", "tenant")
    order = None
    if reference:
        try:
            order = orders.filter(reference=uuid.UUID(reference)).first()
        except ValueError:  # not a UUID: not one of ours
            return None
    for field, value in stripe_ids.items():
        if order is None and value:
            order = orders.filter(**{field: value}).first()
    # A customer can only move its own tenant's orders.
    if order is None or order.tenant_id != billing.tenant_id:
        return None
    return order


def _reference(obj: dict) -> str | None:
    value = (obj.get("metadata") or {}).get("levqor_order")
    return value if isinstance(value, str) else None


def checkout_completed(billing, session: dict) -> str | None:
    from marketplace import services

    order = _order(billing, reference=_reference(session) or session.get("client_reference_id"),
                   stripe_checkout_session_id=session.get("id"))
    if order is None:
        return None
    if session.get("payment_status") not in ("paid", "no_payment_required"):
        return f"order {order.pk}: checkout complete, payment {session.get('payment_status')}"
    with tenant_context(order.tenant):
        return services.order_mark_paid(order=order, actor=ACTOR, payment_intent=_id(session.get("payment_intent")),
                                        invoice=_id(session.get("invoice")), subscription=_id(session.get("subscription")))


def checkout_expired(billing, session: dict) -> str | None:
    from marketplace import services

    order = _order(billing, reference=_reference(session), stripe_checkout_session_id=session.get("id"))
    if order is None:
        return None
    with tenant_context(order.tenant):
        return services.order_mark_canceled(order=order, actor=ACTOR, reason="checkout expired unpaid")


def payment_failed(billing, obj: dict) -> str | None:
    """payment_intent.payment_failed (a declined card) or checkout.session.async_payment_failed."""
    from marketplace import services

    if obj.get("object") == "checkout.session":
        order = _order(billing, reference=_reference(obj), stripe_checkout_session_id=obj.get("id"))
        reason = "payment failed"
    else:
        order = _order(billing, reference=_reference(obj), stripe_payment_intent_id=obj.get("id"))
        error = obj.get("last_payment_error") or {}
        reason = f"payment failed: {error.get('decline_code') or error.get('code') or 'declined'}"
    if order is None:
        return None
    with tenant_context(order.tenant):
        return services.order_mark_failed(order=order, actor=ACTOR, reason=reason)


def charge_refunded(billing, charge: dict) -> str | None:
    """A refund, from our refund path or Stripe's dashboard. Only a full refund disables."""
    from marketplace import services

    order = _order(billing, reference=_reference(charge), stripe_payment_intent_id=_id(charge.get("payment_intent")))
    if order is None:
        return None
    if not charge.get("refunded"):
        return f"order {order.pk}: partial refund of {charge.get('amount_refunded')}; module stays enabled"
    refund = next(iter((charge.get("refunds") or {}).get("data") or []), {})
    with tenant_context(order.tenant):
        return services.order_mark_refunded(order=order, actor=ACTOR, refund_id=refund.get("id", ""),
                                            amount_cents=int(charge.get("amount_refunded") or 0))


def subscription_deleted(billing, sub: dict) -> str | None:
    """A recurring module's subscription ended (canceled at Stripe, or unpaid)."""
    from marketplace import services

    order = _order(billing, reference=_reference(sub), stripe_subscription_id=sub.get("id"))
    if order is None:
        return None
    with tenant_context(order.tenant):
        return services.order_mark_canceled(order=order, actor=ACTOR, reason="subscription ended")


def invoice_paid(billing, invoice: dict) -> str | None:
    """A recurring module's later period paid: a renewal, which its partner is paid for.
    The first invoice is the order's own price (it arrives before or after the checkout's
    completion; either way it is not counted twice)."""
    from billing.webhooks import invoice_subscription
    from marketplace.models import OrderRenewal, TenantOrder

    subscription, metadata = invoice_subscription(invoice)
    order = _order(billing, reference=_reference({"metadata": metadata}), stripe_subscription_id=subscription)
    if order is None or not subscription or order.stripe_subscription_id != subscription:
        return None  # not a module's, or its first invoice before the checkout completed
    if order.status != TenantOrder.Status.PAID or invoice.get("id") == order.stripe_invoice_id:
        return None
    amount = int(invoice.get("amount_paid") or 0)
    if amount <= 0 or not invoice.get("id"):
        return None
    paid_ts = (invoice.get("status_transitions") or {}).get("paid_at")
    renewal, created = OrderRenewal.objects.get_or_create(stripe_invoice_id=invoice["id"], defaults={
        "order": order, "partner_id": order.partner_id, "amount_cents": amount,
        "currency": (invoice.get("currency") or order.currency).lower(),
        "paid_at": datetime.fromtimestamp(paid_ts, tz=dt_timezone.utc) if paid_ts else timezone.now()})
    return f"order {order.pk}: renewal {renewal.amount_cents} {renewal.currency} paid" if created else None


def _id(value) -> str:
    if isinstance(value, dict):
        value = value.get("id")
    return value if isinstance(value, str) else ""


HANDLERS = {
    "checkout.session.completed": checkout_completed,
    "checkout.session.async_payment_succeeded": checkout_completed,
    "checkout.session.expired": checkout_expired,
    "checkout.session.async_payment_failed": payment_failed,
    "payment_intent.payment_failed": payment_failed,
    "charge.refunded": charge_refunded,
    "customer.subscription.deleted": subscription_deleted,
    "invoice.paid": invoice_paid,
}


def register() -> None:
    from billing.webhooks import register_handler

    for event_type, handler in HANDLERS.items():
        register_handler(event_type, handler)
