"""A listing's product and price at Stripe, made on first sale.

Product ids are fixed (`levqor_listing_<slug>`); a price is found by its lookup key,
which names everything a price cannot change (amount, currency, recurrence), so a changed
listing price makes a new Stripe price and earlier ones stay as they were for the orders
that used them. Creation carries idempotency keys named after the lookup key, so two
first buyers at once get the same price rather than a lookup-key clash.
"""
from __future__ import annotations

import stripe

from billing import stripe_api


def product_id(listing) -> str:
    return f"levqor_listing_{listing.slug}"


def lookup_key(listing) -> str:
    recurrence = "monthly" if listing.billing == "recurring" else "once"
    return f"levqor_listing_{listing.slug}_{listing.price_cents}_{listing.currency}_{recurrence}"


def price_for(listing) -> str:
    """The Stripe price id a checkout for `listing` uses (created if Stripe has none)."""
    c = stripe_api.client()
    key = lookup_key(listing)
    found = stripe_api.call(c.v1.prices.list, params={"lookup_keys": [key], "active": True, "limit": 1})
    if found.data:
        return found.data[0]["id"]
    _ensure_product(c, listing)
    params = {"product": product_id(listing), "currency": listing.currency, "unit_amount": listing.price_cents,
              "lookup_key": key, "nickname": listing.name,
              "metadata": {"levqor_listing": listing.slug, "levqor_partner": listing.partner.slug}}
    if listing.billing == "recurring":
        params["recurring"] = {"interval": "month", "usage_type": "licensed"}
    price = stripe_api.call(c.v1.prices.create, params=params, options={"idempotency_key": f"levqor-price-{key}"})
    return price["id"]


def _ensure_product(c, listing) -> None:
    try:
        stripe_api.call(c.v1.products.retrieve, product_id(listing))
    except stripe.InvalidRequestError as exc:
        if not stripe_api.is_missing(exc):
            raise
        stripe_api.call(c.v1.products.create, params={
            "id": product_id(listing), "name": listing.name,
            "metadata": {"levqor_listing": listing.slug, "levqor_partner": listing.partner.slug}},
            options={"idempotency_key": f"levqor-product-{product_id(listing)}"})
