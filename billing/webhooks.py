"""Stripe webhooks: `POST /billing/stripe/webhook`.

Checks, in order, each with its own 400 code: a `Stripe-Signature` header is present
(`signature_missing`); its v1 HMAC-SHA256 over `timestamp.body` matches
STRIPE_WEBHOOK_SECRET (`signature_invalid`); the signed timestamp is within
STRIPE_WEBHOOK_TOLERANCE seconds (`signature_stale`: a captured request replayed later).
A verified event is recorded in `billing_webhook_events` under its unique id in the
same transaction as its effects, so Stripe's redelivery of an event changes nothing
the second time (answered 200 `duplicate`, which stops Stripe retrying).

Effects: subscription updates set the tenant's plan from the subscription's plan price
(limits apply to the next request) and its billing status; a failed invoice starts the
grace period (LEVQOR_BILLING_GRACE_DAYS), after which `enforce_grace` suspends the
tenant; a paid invoice ends it and resumes a tenant that billing suspended.
"""
from __future__ import annotations

import json
import logging
import time
from datetime import datetime, timedelta, timezone as dt_timezone

import stripe
from django.conf import settings
from django.db import IntegrityError, transaction
from django.http import JsonResponse
from django.utils import timezone
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_POST

from billing import catalog
from billing.models import WebhookEvent
from compliance import audit
from levqor.errors import error_body

logger = logging.getLogger(__name__)
ACTOR = "stripe:webhook"


def _refuse(code: str, message: str, status: int = 400) -> JsonResponse:
    return JsonResponse(error_body(code, message), status=status)


@csrf_exempt
@require_POST
def stripe_webhook(request):
    secret = settings.STRIPE_WEBHOOK_SECRET
    if not secret:
        return _refuse("webhooks_not_configured", "STRIPE_WEBHOOK_SECRET is not set on this platform", 503)
    header = request.headers.get("Stripe-Signature", "")
    if not header:
        return _refuse("signature_missing", "the Stripe-Signature header is missing")
    payload = request.body.decode("utf-8", errors="replace")
    try:
        stripe.WebhookSignature.verify_header(payload, header, secret, tolerance=None)
    except stripe.SignatureVerificationError:
        return _refuse("signature_invalid", "the Stripe-Signature does not match this platform's webhook secret")
    signed_at = _signed_timestamp(header)
    if signed_at is None or abs(time.time() - signed_at) > settings.STRIPE_WEBHOOK_TOLERANCE:
        return _refuse("signature_stale", f"the signed timestamp is more than {settings.STRIPE_WEBHOOK_TOLERANCE} s "
                                          "away from now (a replayed request?)")
    try:
        event = json.loads(payload)
        event_id, event_type, obj = event["id"], event["type"], event["data"]["object"]
    except (ValueError, KeyError, TypeError):
        return _refuse("invalid_payload", "the body is not a Stripe event")
    if not isinstance(event_id, str) or not isinstance(event_type, str) or not isinstance(obj, dict):
        return _refuse("invalid_payload", "the body is not a Stripe event")
    outcome = process(event_id, event_type, obj)
    return JsonResponse({"received": True, "outcome": outcome})


def _signed_timestamp(header: str) -> int | None:
    for part in header.split(","):
        key, _, value = part.strip().partition("=")
        if key == "t" and value.isascii() and value.isdigit():
            return int(value)
    return None


def process(event_id: str, event_type: str, obj: dict) -> str:
    """Apply one verified event exactly once; returns what happened, in words."""
    from tenants.models import TenantBilling

    handlers = ([HANDLERS[event_type]] if event_type in HANDLERS else []) + _registered.get(event_type, [])
    customer = obj.get("customer") if event_type != "customer.deleted" else obj.get("id")
    if isinstance(customer, dict):
        customer = customer.get("id")
    billing = (TenantBilling.dangerously_all_tenants.select_related("tenant").filter(
        stripe_customer_id=customer).first() if isinstance(customer, str) and customer else None)
    try:
        with transaction.atomic():
            record = WebhookEvent.objects.create(event_id=event_id, type=event_type,
                                                 tenant_id=billing.tenant_id if billing else None, outcome="processing")
            if not handlers:
                outcome = "ignored: not an event Levqor acts on"
            elif billing is None:
                outcome = "ignored: no tenant has this customer"
            else:
                outcomes = [handler(billing, obj) for handler in handlers]
                outcome = "; ".join(o for o in outcomes if o) or "ignored: not an object Levqor made"
            record.outcome = outcome[:200]
            record.save(update_fields=["outcome"])
    except IntegrityError:
        return "duplicate"
    _mirror(event_type, obj)
    return outcome


def _mirror(event_type: str, obj: dict) -> None:
    """Keep dj-stripe's copy of subscriptions and invoices (staff admin, revenue KPIs)."""
    from djstripe.models import Invoice, Subscription

    model = Subscription if event_type.startswith("customer.subscription.") else (
        Invoice if event_type.startswith("invoice.") else None)
    if model is None or not settings.STRIPE_SECRET_KEY:
        return
    from billing.stripe_api import configure_sdk

    configure_sdk()
    try:
        # dj-stripe pages nested lists (a subscription's items) with the SDK's ListObject.
        data = stripe.StripeObject.construct_from(obj, settings.STRIPE_SECRET_KEY)
        model.sync_from_stripe_data(data, api_key=settings.STRIPE_SECRET_KEY)
    except Exception:  # the tenant's state is already right; the mirror catches up on the next event
        logger.exception("dj-stripe mirror of %s %s failed", event_type, obj.get("id"))


# --- handlers: each runs inside the event's transaction --------------------------------

_STATUS = {"active": "active", "trialing": "active", "past_due": "past_due", "unpaid": "past_due",
           "incomplete": "past_due", "canceled": "canceled", "incomplete_expired": "canceled"}


def _not_the_plans(billing, subscription_id: str | None, metadata: dict | None) -> bool:
    """A subscription (or its invoice) that is not the tenant's plan subscription: a recurring
    marketplace module's (its metadata names the order), or another id than the plan's.
    Its events must not move the plan, the billing status or the grace period."""
    if (metadata or {}).get("levqor_order"):
        return True
    return bool(subscription_id and billing.stripe_subscription_id and subscription_id != billing.stripe_subscription_id)


def invoice_subscription(invoice: dict) -> tuple[str | None, dict]:
    """The subscription an invoice bills, and that subscription's metadata (both API shapes:
    `subscription` before 2025, `parent.subscription_details` after)."""
    details = (invoice.get("parent") or {}).get("subscription_details") or {}
    subscription = invoice.get("subscription") or details.get("subscription")
    if isinstance(subscription, dict):
        return subscription.get("id"), subscription.get("metadata") or {}
    return subscription, details.get("metadata") or {}


def _subscription_updated(billing, sub: dict) -> str | None:
    from tenants import services

    tenant = billing.tenant
    notes = []
    plan = None
    for item in (sub.get("items") or {}).get("data") or []:
        plan = catalog.plan_for_price(item.get("price") or {}) or plan
    if plan is None and _not_the_plans(billing, sub.get("id"), sub.get("metadata")):
        return None  # a recurring marketplace module's subscription: the marketplace handles it
    if plan and plan != tenant.plan:
        before = tenant.plan
        services.tenant_change_plan(tenant=tenant, plan=plan, actor=ACTOR, from_billing=True)
        notes.append(f"plan {before} -> {plan}")
    status = _STATUS.get(sub.get("status", ""), billing.status)
    billing.stripe_subscription_id = sub.get("id") or billing.stripe_subscription_id
    end = sub.get("current_period_end") or next(
        (i.get("current_period_end") for i in (sub.get("items") or {}).get("data") or []), None)
    if end:
        billing.current_period_end = datetime.fromtimestamp(end, tz=dt_timezone.utc)
    if status == "past_due":
        notes.append(_start_grace(billing, reason=f"subscription {sub.get('status')}"))
    elif status == "active" and billing.status != "active":
        notes.append(_end_grace(billing, reason="subscription active"))
    billing.status = status
    billing.save()
    audit.record("billing.subscription_updated", tenant_id=tenant.id, actor=ACTOR,
                 metadata={"subscription": sub.get("id"), "status": sub.get("status"), "plan": tenant.plan})
    return "; ".join(n for n in notes if n) or f"subscription {sub.get('status')}"


def _subscription_deleted(billing, sub: dict) -> str | None:
    if _not_the_plans(billing, sub.get("id"), sub.get("metadata")):
        return None  # not the plan's (a module's, or an old one): the marketplace handles its own
    note = _start_grace(billing, reason="subscription canceled")
    billing.status = "canceled"
    billing.save()
    audit.record("billing.subscription_canceled", tenant_id=billing.tenant_id, actor=ACTOR,
                 metadata={"subscription": sub.get("id"), "grace_until": billing.grace_until})
    return note or "subscription canceled"


def _invoice_payment_failed(billing, invoice: dict) -> str | None:
    from compliance.alerts import alert_raise

    if _not_the_plans(billing, *invoice_subscription(invoice)):
        return None  # a module's renewal failing does not put the organization in grace
    note = _start_grace(billing, reason="payment failed")
    billing.status = "past_due"
    billing.save()
    audit.record("billing.payment_failed", tenant_id=billing.tenant_id, actor=ACTOR, metadata={
        "invoice": invoice.get("id"), "amount_due": invoice.get("amount_due"), "attempt": invoice.get("attempt_count"),
        "grace_until": billing.grace_until})
    alert_raise(kind="billing.payment_failed", tenant_id=billing.tenant_id, severity="critical",
                message=(f"A payment of {_money(invoice)} failed. Update the payment method before "
                         f"{billing.grace_until:%Y-%m-%d %H:%M} UTC or the organization is suspended."),
                metadata={"invoice": invoice.get("id")}, dedupe_key=f"{billing.tenant_id}:payment")
    return note or "payment failed"


def _invoice_paid(billing, invoice: dict) -> str | None:
    if _not_the_plans(billing, *invoice_subscription(invoice)):
        return None  # paying for a module does not end the plan's grace period
    note = _end_grace(billing, reason="invoice paid")
    billing.status = "active"
    billing.save()
    audit.record("billing.payment_succeeded", tenant_id=billing.tenant_id, actor=ACTOR,
                 metadata={"invoice": invoice.get("id"), "amount_paid": invoice.get("amount_paid")})
    return note or "invoice paid"


def _customer_deleted(billing, customer: dict) -> str:
    billing.stripe_customer_id = billing.stripe_subscription_id = ""
    billing.status = "canceled"
    note = _start_grace(billing, reason="Stripe customer deleted")
    billing.save()
    return note or "customer deleted"


# Apps above billing act on events too (the marketplace on its checkouts and refunds)
# without billing importing them: `register_handler(event_type, handler)` from their
# AppConfig.ready(). A handler takes (billing, obj), runs inside the event's transaction
# after billing's own, and returns what it did, or None when the object is not its own.
_registered: dict[str, list] = {}


def register_handler(event_type: str, handler) -> None:
    handlers = _registered.setdefault(event_type, [])
    if handler not in handlers:
        handlers.append(handler)


HANDLERS = {
    "customer.subscription.updated": _subscription_updated,
    "customer.subscription.created": _subscription_updated,
    "customer.subscription.deleted": _subscription_deleted,
    "invoice.payment_failed": _invoice_payment_failed,
    "invoice.paid": _invoice_paid,
    "customer.deleted": _customer_deleted,
}


def _money(invoice: dict) -> str:
    amount = invoice.get("amount_due") or 0
    return f"{amount / 100:.2f} {str(invoice.get('currency') or '').upper()}".strip()


# --- grace and suspension --------------------------------------------------------------


def _start_grace(billing, *, reason: str) -> str:
    """The first failure starts the clock; later ones do not extend it."""
    if billing.payment_failed_at is not None:
        return ""
    now = timezone.now()
    billing.payment_failed_at = now
    billing.grace_until = now + timedelta(days=settings.LEVQOR_BILLING_GRACE_DAYS)
    if settings.LEVQOR_BILLING_GRACE_DAYS <= 0:
        _suspend(billing, reason=reason)
        return f"{reason}: suspended (no grace period)"
    return f"{reason}: grace until {billing.grace_until:%Y-%m-%d %H:%M}"


def _end_grace(billing, *, reason: str) -> str:
    from compliance.models import Alert
    from tenants import services

    notes = []
    if billing.payment_failed_at is not None:
        notes.append("grace ended")
    billing.payment_failed_at = billing.grace_until = None
    Alert.objects.filter(kind="billing.payment_failed", tenant_id=billing.tenant_id, resolved_at__isnull=True).update(
        resolved_at=timezone.now())
    tenant = billing.tenant
    if billing.suspended_for_billing:
        billing.suspended_for_billing = False
        if tenant.status == tenant.Status.SUSPENDED:
            services.tenant_resume(tenant=tenant, actor=ACTOR)
            notes.append("tenant resumed")
    return f"{reason}: {', '.join(notes)}" if notes else ""


def _suspend(billing, *, reason: str) -> None:
    from tenants import services

    tenant = billing.tenant
    if tenant.status == tenant.Status.ACTIVE:
        services.tenant_suspend(tenant=tenant, actor="system:billing", reason=reason)
        billing.suspended_for_billing = True


def enforce_grace() -> list[str]:
    """Suspend tenants whose grace period ran out unpaid. Run hourly by Celery beat."""
    from tenants.models import Tenant, TenantBilling

    suspended = []
    due = TenantBilling.dangerously_all_tenants.select_related("tenant").filter(
        grace_until__lte=timezone.now(), status__in=["past_due", "canceled"], suspended_for_billing=False,
        tenant__status=Tenant.Status.ACTIVE)
    for billing in due:
        with transaction.atomic():
            _suspend(billing, reason="payment overdue after the grace period")
            billing.save(update_fields=["suspended_for_billing", "updated_at"])
        suspended.append(billing.tenant.slug)
    return suspended
