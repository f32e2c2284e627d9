"""What Levqor sells, defined once: three plans and three metered usages.

`sync_catalog()` makes Stripe match this (`manage.py billing_sync_catalog`): products
have fixed ids, prices are found by lookup key, meters by event name. Prices are
immutable at Stripe, so a changed amount creates a new price that takes over the
lookup key and archives the old one; running it twice changes nothing. Each price is
mirrored into dj-stripe's tables for the staff admin and the KPI reports.
"""
from __future__ import annotations

from dataclasses import dataclass

from django.conf import settings

from billing import stripe_api


@dataclass(frozen=True)
class PlanProduct:
    plan: str
    name: str
    monthly_cents: int

    @property
    def product_id(self) -> str:
        return f"levqor_plan_{self.plan}"

    @property
    def lookup_key(self) -> str:
        return f"levqor_plan_{self.plan}_monthly"


@dataclass(frozen=True)
class Metered:
    metric: str  # the name Stripe and invoices show
    ledger_metric: str | None  # the policy counter it is read from; None: measured at sync time
    name: str
    formula: str  # Stripe meter aggregation: sum of daily deltas, or the last gauge reading
    unit_cents: str  # decimal string, per unit

    @property
    def event_name(self) -> str:
        return f"levqor_{self.metric}"

    @property
    def product_id(self) -> str:
        return f"levqor_usage_{self.metric}"

    @property
    def lookup_key(self) -> str:
        return f"levqor_usage_{self.metric}"


PLANS = (
    PlanProduct("core", "Tenant Core", 4900),
    PlanProduct("pro", "Tenant Pro", 19900),
    PlanProduct("enterprise", "Tenant Enterprise", 99900),
)
METERED = (
    Metered("api_calls", "api_calls", "API calls", "sum", "0.005"),
    Metered("workflow_runs", "jobs", "Workflow runs", "sum", "0.5"),
    Metered("storage_gb", None, "Storage (GB)", "last", "25"),
)


def plan_product(plan: str) -> PlanProduct:
    return next(p for p in PLANS if p.plan == plan)


def plan_for_price(price: dict) -> str | None:
    """The plan a subscription item's price stands for (by lookup key, then product)."""
    lookup, product = price.get("lookup_key"), price.get("product")
    if isinstance(product, dict):
        product = product.get("id")
    for p in PLANS:
        if lookup == p.lookup_key or product == p.product_id:
            return p.plan
    return None


def _sync_product(c, product_id: str, name: str, metadata: dict, report: dict) -> None:
    import stripe

    try:
        current = stripe_api.call(c.v1.products.retrieve, product_id)
    except stripe.InvalidRequestError as exc:
        if not stripe_api.is_missing(exc):
            raise
        stripe_api.call(c.v1.products.create, params={"id": product_id, "name": name, "metadata": metadata})
        report["created"].append(f"product {product_id}")
        return
    if current.get("name") != name or not current.get("active", True):
        stripe_api.call(c.v1.products.update, product_id, params={"name": name, "active": True})
        report["updated"].append(f"product {product_id}")
    else:
        report["unchanged"].append(f"product {product_id}")


def _sync_meter(c, m: Metered, meters: dict, report: dict) -> str:
    existing = meters.get(m.event_name)
    if existing:
        report["unchanged"].append(f"meter {m.event_name}")
        return existing["id"]
    meter = stripe_api.call(c.v1.billing.meters.create, params={
        "display_name": m.name, "event_name": m.event_name,
        "default_aggregation": {"formula": m.formula},
        "customer_mapping": {"type": "by_id", "event_payload_key": "stripe_customer_id"},
        "value_settings": {"event_payload_key": "value"},
    })
    report["created"].append(f"meter {m.event_name}")
    return meter["id"]


def _sync_price(c, lookup_key: str, want: dict, existing: dict | None, report: dict) -> dict:
    def same(price) -> bool:
        recurring = price.get("recurring") or {}
        amount = price.get("unit_amount_decimal") or str(price.get("unit_amount"))
        return (price.get("product") == want["product"] and recurring.get("usage_type") == want["recurring"].get(
            "usage_type", "licensed") and recurring.get("meter") == want["recurring"].get("meter")
            and _decimal_eq(amount, want["unit_amount_decimal"]) and price.get("currency") == want["currency"])

    if existing and same(existing):
        report["unchanged"].append(f"price {lookup_key}")
        return existing
    price = stripe_api.call(c.v1.prices.create, params={**want, "lookup_key": lookup_key, "transfer_lookup_key": True})
    if existing:
        stripe_api.call(c.v1.prices.update, existing["id"], params={"active": False})
        report["updated"].append(f"price {lookup_key}")
    else:
        report["created"].append(f"price {lookup_key}")
    return price


def _decimal_eq(a, b) -> bool:
    from decimal import Decimal, InvalidOperation

    try:
        return Decimal(str(a)) == Decimal(str(b))
    except InvalidOperation:
        return False


def sync_catalog() -> dict:
    """Make Stripe's products, meters and prices match PLANS and METERED."""
    c = stripe_api.client()
    report: dict[str, list] = {"created": [], "updated": [], "unchanged": []}
    currency = settings.STRIPE_CURRENCY
    meters = {m["event_name"]: stripe_api.plain(m) for m in stripe_api.call(c.v1.billing.meters.list, params={
        "status": "active", "limit": 100}).auto_paging_iter()}
    lookup_keys = [p.lookup_key for p in PLANS] + [m.lookup_key for m in METERED]
    prices = {p["lookup_key"]: stripe_api.plain(p) for p in stripe_api.call(c.v1.prices.list, params={
        "lookup_keys": lookup_keys, "active": True, "limit": 100}).auto_paging_iter()}
    synced = []
    for p in PLANS:
        _sync_product(c, p.product_id, p.name, {"levqor_plan": p.plan}, report)
        synced.append(_sync_price(c, p.lookup_key, {
            "product": p.product_id, "currency": currency, "unit_amount_decimal": str(p.monthly_cents),
            "recurring": {"interval": "month", "usage_type": "licensed"}, "nickname": p.name,
            "metadata": {"levqor_plan": p.plan}}, prices.get(p.lookup_key), report))
    for m in METERED:
        _sync_product(c, m.product_id, m.name, {"levqor_metric": m.metric}, report)
        meter_id = _sync_meter(c, m, meters, report)
        synced.append(_sync_price(c, m.lookup_key, {
            "product": m.product_id, "currency": currency, "unit_amount_decimal": m.unit_cents,
            "recurring": {"interval": "month", "usage_type": "metered", "meter": meter_id}, "nickname": m.name,
            "metadata": {"levqor_metric": m.metric}}, prices.get(m.lookup_key), report))
    _mirror(synced)
    forget()
    return report


def _mirror(prices) -> None:
    """Keep dj-stripe's copy of the catalog current (staff admin, revenue reports)."""
    from djstripe.models import Price, Product

    c = stripe_api.client()
    for price in prices:
        product = stripe_api.call(c.v1.products.retrieve, price["product"])
        Product.sync_from_stripe_data(product, api_key=settings.STRIPE_SECRET_KEY)
        Price.sync_from_stripe_data(price, api_key=settings.STRIPE_SECRET_KEY)


# Ids read from Stripe, cached per process and per Stripe account (key and API base).
_cache: dict[str, tuple[tuple, dict[str, str]]] = {}


def _cached(name: str, load) -> dict[str, str]:
    account = (settings.STRIPE_SECRET_KEY, settings.STRIPE_API_BASE)
    hit = _cache.get(name)
    if hit is None or hit[0] != account:
        hit = _cache[name] = (account, load(stripe_api.client()))
    return hit[1]


def _load_prices(c) -> dict[str, str]:
    lookup_keys = [p.lookup_key for p in PLANS] + [m.lookup_key for m in METERED]
    found = {p["lookup_key"]: p["id"] for p in stripe_api.call(c.v1.prices.list, params={
        "lookup_keys": lookup_keys, "active": True, "limit": 100}).auto_paging_iter()}
    missing = sorted(set(lookup_keys) - set(found))
    if missing:
        raise stripe_api.BillingUnavailable(
            f"the Stripe catalog is not synced (missing {', '.join(missing)}): run manage.py billing_sync_catalog")
    return found


def _load_meters(c) -> dict[str, str]:
    return {m["event_name"]: m["id"] for m in stripe_api.call(c.v1.billing.meters.list, params={
        "status": "active", "limit": 100}).auto_paging_iter()}


def price_ids() -> dict[str, str]:
    """lookup key -> active price id."""
    return _cached("prices", _load_prices)


def meter_ids() -> dict[str, str]:
    """event name -> meter id."""
    return _cached("meters", _load_meters)


def forget() -> None:
    """Drop the cached ids (after a catalog sync, and between tests)."""
    _cache.clear()
