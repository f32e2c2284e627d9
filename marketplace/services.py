"""Marketplace use cases: place, pay, fail, cancel and refund an order.

Every function runs in the buying tenant's context (the API, the portal and the webhook
handlers enter it; services never switch tenants) and records its audit event in the
same transaction as the change. An order moves:

    pending ──paid──▶ paid ──refund──▶ refunded        (one-off)
       │                 └──cancel──▶ canceled         (recurring: the subscription ends)
       ├──payment failed──▶ failed
       └──cancel / checkout expired──▶ canceled

Only `paid` enables the module: its feature flags (read into the tenant's context by
`selectors.granted_features`) and its packs (installed into the tenant's own tables).
Leaving `paid` disables both, except what another paid order of the tenant still gives.
"""
from __future__ import annotations

import logging
from contextlib import contextmanager
from datetime import timedelta

import stripe
from django.conf import settings
from django.db import IntegrityError, transaction
from django.utils import timezone

from billing import stripe_api
from compliance import audit
from levqor.errors import APIError
from marketplace import packs, stripe_catalog
from marketplace.models import Listing, TenantOrder
from tenants import hotcache
from tenants.context import current_tenant

logger = logging.getLogger(__name__)


def payments_configured() -> bool:
    return stripe_api.enabled()


def _require_payments() -> None:
    if not payments_configured():
        raise APIError("payments_not_configured",
                       "Payments are not configured on this platform (no STRIPE_SECRET_KEY), so nothing can be bought.",
                       status_code=503)


@contextmanager
def _refusals_are_503():
    """Stripe refusing a call is a 503 the client can retry (nothing was written)."""
    try:
        yield
    except stripe.InvalidRequestError as exc:
        raise stripe_api.BillingUnavailable(f"Stripe refused: {exc.user_message or exc}") from exc


def _stripe(fn, *args, **kwargs):
    """One Stripe call, its refusal a 503."""
    with _refusals_are_503():
        return stripe_api.call(fn, *args, **kwargs)


# --- placing an order ----------------------------------------------------------------------


def order_create(*, listing_id: int, actor: str, success_url: str, cancel_url: str,
                 idempotency_key: str = "") -> tuple[TenantOrder, bool]:
    """Place an order for the current tenant and open its Stripe Checkout session.

    Returns (order, created). A second Buy while an order for the listing is pending
    returns that order (created False), so a double click opens one checkout; a Buy of a
    module the tenant owns is 409 `already_owned`. The order row, its checkout session id
    and the audit event commit together, after Stripe answered; if Stripe fails, nothing
    is written (503 `billing_unavailable`).
    """
    from tenants.models import TenantBilling

    tenant = current_tenant()
    listing = Listing.objects.select_related("partner").filter(pk=listing_id, active=True).first()
    if listing is None:
        raise APIError("listing_not_found", f"No listing {listing_id} is on sale.", status_code=404)
    _require_payments()
    if idempotency_key:
        earlier = TenantOrder.objects.filter(idempotency_key=idempotency_key).first()
        if earlier is not None:
            if earlier.listing_id != listing.pk:
                raise APIError("idempotency_key_reused", "This Idempotency-Key was used for another listing.",
                               status_code=409)
            return earlier, False
    existing = _open_order(listing)
    if existing is not None and _checkout_expired_unseen(existing):
        order_mark_canceled(order=existing, actor="system:marketplace", reason="checkout expired unpaid")
        existing = None
    if existing is not None:
        return _existing(existing)
    billing = TenantBilling.objects.filter(tenant_id=tenant.id).first()
    if billing is None or not billing.stripe_customer_id:
        raise APIError("no_billing_account", "This organization has no Stripe customer yet; platform staff can "
                       "attach one.", status_code=409)
    try:
        with transaction.atomic():
            order = TenantOrder.objects.create(
                tenant_id=tenant.id, listing=listing, partner=listing.partner, price_cents=listing.price_cents,
                currency=listing.currency, billing=listing.billing, features=list(listing.features),
                packs=list(listing.packs), idempotency_key=idempotency_key, created_by=actor)
            # A concurrent Buy of the same listing waits on the unique index right here
            # until this transaction ends, then takes the IntegrityError branch below.
            session = _checkout_session(order, listing, billing.stripe_customer_id, success_url, cancel_url)
            order.stripe_checkout_session_id = session["id"]
            order.checkout_url = session.get("url") or ""
            order.save(update_fields=["stripe_checkout_session_id", "checkout_url"])
            audit.record("marketplace.order_created", tenant_id=tenant.id, actor=actor, metadata={
                "order": order.pk, "listing": listing.slug, "partner": listing.partner.slug,
                "price_cents": order.price_cents, "currency": order.currency, "billing": order.billing})
    except IntegrityError:
        existing = (TenantOrder.objects.filter(idempotency_key=idempotency_key).first() if idempotency_key else None) \
            or _open_order(listing)
        if existing is None:
            raise
        return _existing(existing)
    return order, True


def _open_order(listing) -> TenantOrder | None:
    return TenantOrder.objects.filter(listing=listing, status__in=TenantOrder.OPEN).first()


def _checkout_expired_unseen(order: TenantOrder) -> bool:
    """A pending order whose Checkout session Stripe expired (after 24 hours) without our
    hearing of it (a lost webhook) must not block a new Buy forever."""
    if order.status != TenantOrder.Status.PENDING or order.ts > timezone.now() - timedelta(hours=24):
        return False
    if not order.stripe_checkout_session_id:
        return True
    try:
        session = stripe_api.call(stripe_api.client().v1.checkout.sessions.retrieve, order.stripe_checkout_session_id)
    except (stripe.StripeError, APIError):
        return False
    return session.get("status") == "expired"


def _existing(order: TenantOrder) -> tuple[TenantOrder, bool]:
    if order.status == TenantOrder.Status.PAID:
        raise APIError("already_owned", "This organization already owns this listing.", status_code=409,
                       details={"order_id": order.pk})
    return order, False


def _checkout_session(order: TenantOrder, listing: Listing, customer: str, success_url: str, cancel_url: str) -> dict:
    c = stripe_api.client()
    with _refusals_are_503():  # finding or making the listing's price (an unsupported currency, an amount too small)
        price = stripe_catalog.price_for(listing)
    if listing.stripe_price_id != price:
        Listing.objects.filter(pk=listing.pk).update(stripe_price_id=price)
    metadata = {"levqor_order": str(order.reference), "levqor_tenant_id": str(order.tenant_id),
                "levqor_listing": listing.slug}
    params = {
        "mode": "subscription" if listing.billing == Listing.Billing.RECURRING else "payment",
        "customer": customer, "client_reference_id": str(order.reference),
        "line_items": [{"price": price, "quantity": 1}],
        "success_url": success_url, "cancel_url": cancel_url, "metadata": metadata,
    }
    if listing.billing == Listing.Billing.RECURRING:
        params["subscription_data"] = {"metadata": metadata}
    else:
        # Separate charges and transfers: the charge is the platform's; partners are paid
        # by monthly transfers, grouped per payout (marketplace/payouts.py).
        params["payment_intent_data"] = {"metadata": metadata}
    return _stripe(c.v1.checkout.sessions.create, params=params,
                   options={"idempotency_key": f"levqor-order-{order.reference}-checkout"})


# --- what Stripe reports -------------------------------------------------------------------


def _locked(order: TenantOrder) -> TenantOrder:
    return TenantOrder.objects.select_for_update().get(pk=order.pk)


def order_mark_paid(*, order: TenantOrder, actor: str, payment_intent: str = "", invoice: str = "",
                    subscription: str = "") -> str:
    """Stripe took the payment: the order is paid and its module enabled for this tenant."""
    with transaction.atomic():
        order = _locked(order)
        if order.status == TenantOrder.Status.PAID:
            return f"order {order.pk} already paid"
        if order.status in (TenantOrder.Status.REFUNDED,):
            return f"order {order.pk} is refunded; payment ignored"
        was = order.status
        order.status = TenantOrder.Status.PAID
        order.status_reason = "" if was == TenantOrder.Status.PENDING else f"paid after {was}"
        order.paid_at, order.closed_at = timezone.now(), None
        order.stripe_payment_intent_id = payment_intent or order.stripe_payment_intent_id
        order.stripe_invoice_id = invoice or order.stripe_invoice_id
        order.stripe_subscription_id = subscription or order.stripe_subscription_id
        try:
            with transaction.atomic():
                order.save()
        except IntegrityError:
            # The tenant placed a new order after this one failed, and both got paid.
            transaction.on_commit(lambda: _refund_quietly(order))
            return f"order {order.pk} paid after {was} while another order is open: refund requested"
        audit.record("marketplace.order_paid", tenant_id=order.tenant_id, actor=actor, metadata={
            "order": order.pk, "listing": order.listing.slug, "price_cents": order.price_cents,
            "currency": order.currency, "payment_intent": order.stripe_payment_intent_id,
            "subscription": order.stripe_subscription_id})
        _enable(order, actor)
    return f"order {order.pk} paid: {order.listing.slug} enabled"


def order_mark_failed(*, order: TenantOrder, actor: str, reason: str) -> str:
    """A payment attempt failed: the order is failed and enables nothing."""
    with transaction.atomic():
        order = _locked(order)
        if order.status != TenantOrder.Status.PENDING:
            return f"order {order.pk} is {order.status}; failure ignored"
        _close(order, TenantOrder.Status.FAILED, reason)
        audit.record("marketplace.order_failed", tenant_id=order.tenant_id, actor=actor,
                     metadata={"order": order.pk, "listing": order.listing.slug, "reason": reason})
    return f"order {order.pk} failed: {reason}"


def order_mark_canceled(*, order: TenantOrder, actor: str, reason: str) -> str:
    """The checkout expired or was canceled, or a recurring module's subscription ended."""
    with transaction.atomic():
        order = _locked(order)
        if order.status not in TenantOrder.OPEN:
            return f"order {order.pk} is {order.status}; cancel ignored"
        was_paid = order.status == TenantOrder.Status.PAID
        _close(order, TenantOrder.Status.CANCELED, reason)
        audit.record("marketplace.order_canceled", tenant_id=order.tenant_id, actor=actor,
                     metadata={"order": order.pk, "listing": order.listing.slug, "reason": reason})
        if was_paid:
            _disable(order, actor, reason)
    return f"order {order.pk} canceled: {reason}"


def order_mark_refunded(*, order: TenantOrder, actor: str, refund_id: str, amount_cents: int) -> str:
    """The payment was refunded in full: the module is disabled for this tenant."""
    with transaction.atomic():
        order = _locked(order)
        if order.status == TenantOrder.Status.REFUNDED:
            return f"order {order.pk} already refunded"
        if order.status != TenantOrder.Status.PAID:
            return f"order {order.pk} is {order.status}; refund ignored"
        order.stripe_refund_id = refund_id or order.stripe_refund_id
        order.refunded_cents = amount_cents
        _close(order, TenantOrder.Status.REFUNDED, "refunded")
        audit.record("marketplace.order_refunded", tenant_id=order.tenant_id, actor=actor, metadata={
            "order": order.pk, "listing": order.listing.slug, "refund": refund_id, "amount_cents": amount_cents})
        _disable(order, actor, "refunded")
    return f"order {order.pk} refunded: {order.listing.slug} disabled"


def _close(order: TenantOrder, status: str, reason: str) -> None:
    order.status, order.status_reason, order.closed_at = status, reason[:200], timezone.now()
    order.save(update_fields=["status", "status_reason", "closed_at", "stripe_refund_id", "refunded_cents"])


# --- the tenant cancels or refunds ---------------------------------------------------------


def order_cancel(*, order_id: int, actor: str) -> TenantOrder:
    """An org admin backs out: a pending order's checkout is expired; a paid recurring
    module's subscription is canceled; a paid one-off module is refunded within
    LEVQOR_MARKETPLACE_REFUND_DAYS. Stripe is asked first; the order changes only once it
    agreed (the webhook that follows finds the order already closed)."""
    order = TenantOrder.objects.select_related("listing").filter(pk=order_id).first()
    if order is None:
        raise APIError("not_found", f"No order {order_id}.", status_code=404)
    _require_payments()
    c = stripe_api.client()
    if order.status == TenantOrder.Status.PENDING:
        _expire_checkout(c, order)
        order_mark_canceled(order=order, actor=actor, reason="canceled by the organization")
    elif order.status == TenantOrder.Status.PAID and order.billing == Listing.Billing.RECURRING:
        if order.stripe_subscription_id:
            _stripe(c.v1.subscriptions.cancel, order.stripe_subscription_id,
                    options={"idempotency_key": f"levqor-order-{order.reference}-cancel"})
        order_mark_canceled(order=order, actor=actor, reason="subscription canceled by the organization")
    elif order.status == TenantOrder.Status.PAID:
        window = timedelta(days=settings.LEVQOR_MARKETPLACE_REFUND_DAYS)
        if order.paid_at and timezone.now() - order.paid_at > window:
            raise APIError("refund_window_passed", f"One-off purchases can be refunded within "
                           f"{settings.LEVQOR_MARKETPLACE_REFUND_DAYS} days of payment; ask platform support.",
                           status_code=409)
        order_refund(order=order, actor=actor)
    else:
        raise APIError("invalid_state", f"This order is {order.status}; there is nothing to cancel.", status_code=409)
    order.refresh_from_db()
    return order


def order_refund(*, order: TenantOrder, actor: str) -> str:
    """Refund a paid one-off order in full at Stripe, then disable its module (staff may
    call this at any time; the tenant's path checks the refund window first)."""
    if order.status != TenantOrder.Status.PAID:
        raise APIError("invalid_state", f"This order is {order.status}, not paid.", status_code=409)
    if not order.stripe_payment_intent_id:
        raise APIError("invalid_state", "This order has no payment at Stripe to refund.", status_code=409)
    refund = _stripe(stripe_api.client().v1.refunds.create, params={
        "payment_intent": order.stripe_payment_intent_id, "reason": "requested_by_customer",
        "metadata": {"levqor_order": str(order.reference)}},
        options={"idempotency_key": f"levqor-order-{order.reference}-refund"})
    return order_mark_refunded(order=order, actor=actor, refund_id=refund["id"], amount_cents=refund["amount"])


def _expire_checkout(c, order: TenantOrder) -> None:
    if not order.stripe_checkout_session_id:
        return
    try:
        stripe_api.call(c.v1.checkout.sessions.expire, order.stripe_checkout_session_id)
    except stripe.InvalidRequestError as exc:
        # Already expired is what we wanted; already completed means it was paid meanwhile.
        session = _stripe(c.v1.checkout.sessions.retrieve, order.stripe_checkout_session_id)
        if session.get("status") == "complete":
            raise APIError("invalid_state", "This order was paid meanwhile; refresh the page.", status_code=409) from exc
        if session.get("status") != "expired":
            raise stripe_api.BillingUnavailable(f"Stripe refused: {exc.user_message or exc}") from exc


def _refund_quietly(order: TenantOrder) -> None:
    try:
        stripe_api.call(stripe_api.client().v1.refunds.create, params={
            "payment_intent": order.stripe_payment_intent_id, "reason": "duplicate",
            "metadata": {"levqor_order": str(order.reference)}},
            options={"idempotency_key": f"levqor-order-{order.reference}-refund"})
    except stripe.StripeError:
        logger.exception("refund of duplicate marketplace order %s failed; refund it from the Stripe dashboard",
                         order.pk)


# --- module enablement ---------------------------------------------------------------------


def _enable(order: TenantOrder, actor: str) -> None:
    installed = {name: packs.install(name) for name in order.packs if name in packs.PACKS}
    audit.record("marketplace.module_enabled", tenant_id=order.tenant_id, actor=actor, metadata={
        "order": order.pk, "listing": order.listing.slug, "features": order.features, "packs": sorted(installed)})
    hotcache.bump()  # every process rebuilds this tenant's context, with its new features


def _disable(order: TenantOrder, actor: str, reason: str) -> None:
    still = TenantOrder.objects.filter(status=TenantOrder.Status.PAID).exclude(pk=order.pk)
    kept_packs = {name for other in still for name in other.packs}
    removed = [name for name in order.packs if name not in kept_packs and name in packs.PACKS]
    for name in removed:
        packs.uninstall(name)
    kept_features = {feature for other in still for feature in other.features}
    audit.record("marketplace.module_disabled", tenant_id=order.tenant_id, actor=actor, metadata={
        "order": order.pk, "listing": order.listing.slug, "reason": reason,
        "features": [f for f in order.features if f not in kept_features], "packs": removed})
    hotcache.bump()
