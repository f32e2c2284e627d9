"""The one way Levqor talks to Stripe: the official SDK's StripeClient.

`STRIPE_SECRET_KEY` switches billing on; without it every billing path is a no-op and
the portal says billing is not configured. `STRIPE_API_BASE` points the SDK at another
API host (the local Stripe server of the tests and benchmarks); production leaves it
unset. Keys are read from the environment only and never logged: Stripe errors are
turned into `BillingUnavailable` with Stripe's message, which never carries the key.
"""
from __future__ import annotations

import threading

import stripe
from django.conf import settings

from compliance import outbound
from levqor.errors import APIError

_local = threading.local()
BREAKER = "stripe"


def enabled() -> bool:
    return bool(settings.STRIPE_SECRET_KEY)


class BillingUnavailable(APIError):
    def __init__(self, message: str, retry_after: float | None = None):
        headers = {"Retry-After": str(max(1, int(retry_after + 0.999)))} if retry_after is not None else None
        super().__init__("billing_unavailable", message, status_code=503, headers=headers)


def configure_sdk() -> None:
    """The SDK's module-level settings, which dj-stripe's sync code uses."""
    stripe.api_base = settings.STRIPE_API_BASE or "https://api.stripe.com"
    stripe.max_network_retries = settings.STRIPE_MAX_NETWORK_RETRIES


def client() -> stripe.StripeClient:
    """A StripeClient for this thread (its HTTP session is not shared across threads)."""
    configure_sdk()
    signature = (settings.STRIPE_SECRET_KEY, settings.STRIPE_API_BASE)
    cached = getattr(_local, "client", None)
    if cached is None or cached[0] != signature:
        base = {"api": settings.STRIPE_API_BASE} if settings.STRIPE_API_BASE else None
        cached = (signature, stripe.StripeClient(settings.STRIPE_SECRET_KEY, base_addresses=base,
                                                 max_network_retries=settings.STRIPE_MAX_NETWORK_RETRIES))
        _local.client = cached
    return cached[1]


def guarded():
    """The `stripe` circuit breaker around one call (runtime/breakers.py). A 4xx
    (InvalidRequestError) is Stripe answering, not failing: it does not count."""
    return outbound.guard(BREAKER, ignore=(stripe.InvalidRequestError,))


def call(fn, *args, **kwargs):
    """Run one SDK call; Stripe being down or refusing becomes a clear 503, not a 500, and
    so does its breaker being open (then no call is made).
    A single object is returned as a plain dict; a list as the SDK's ListObject."""
    try:
        with guarded():
            result = fn(*args, **kwargs)
    except stripe.InvalidRequestError:
        raise
    except outbound.CircuitOpen as exc:
        raise BillingUnavailable(f"Stripe: {exc.message}", retry_after=exc.retry_after) from exc
    except stripe.StripeError as exc:
        raise BillingUnavailable(f"Stripe: {exc.user_message or exc.__class__.__name__}") from exc
    # Single objects come back as plain dicts (JSON as Stripe sent it); lists keep paging.
    return result if hasattr(result, "auto_paging_iter") else plain(result)


def is_missing(exc: stripe.StripeError) -> bool:
    return isinstance(exc, stripe.InvalidRequestError) and getattr(exc, "code", "") == "resource_missing"


def plain(obj) -> dict:
    """A StripeObject as the JSON Stripe sent (the SDK turns decimal strings into Decimal)."""
    import json

    return json.loads(json.dumps(obj.to_dict(), default=str))

