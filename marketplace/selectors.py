"""Marketplace reads: what a tenant may buy and owns, and what partners sold."""
from __future__ import annotations

from collections import defaultdict

from django.db.models import Count, Sum
from django.db.models.functions import TruncMonth

from marketplace.models import Listing, OrderRenewal, Payout, TenantOrder


def granted_features(tenant_id: int) -> list[str]:
    """The feature flags a tenant's paid orders enable (a feature source for its context:
    tenants.context.register_feature_source). Platform code: no tenant context is set
    while a context is built, hence the explicit unscoped manager."""
    rows = TenantOrder.dangerously_all_tenants.filter(tenant_id=tenant_id, status=TenantOrder.Status.PAID)
    return sorted({feature for features in rows.values_list("features", flat=True) for feature in features or []})


def money(cents: int, currency: str) -> str:
    return f"{cents // 100:,}.{cents % 100:02d} {currency.upper()}"


def order_json(order: TenantOrder) -> dict:
    return {
        "id": order.pk, "listing_id": order.listing_id, "listing": order.listing.slug, "name": order.listing.name,
        "partner_id": order.partner_id, "price_cents": order.price_cents, "currency": order.currency,
        "price_display": money(order.price_cents, order.currency),
        "billing": order.billing, "status": order.status, "status_reason": order.status_reason,
        "ts": order.ts, "paid_at": order.paid_at, "closed_at": order.closed_at,
        "features": order.features, "packs": order.packs,
        "checkout_url": order.checkout_url if order.status == TenantOrder.Status.PENDING else None,
    }


def tenant_orders():
    """The current tenant's orders, newest first (scoped by the tenant manager)."""
    return TenantOrder.objects.select_related("listing").order_by("-ts", "-pk")


def listings_for_tenant() -> list[dict]:
    """Every listing on sale, each with this tenant's state: `owned` (a paid order) and
    its open order, if any."""
    open_orders = {o.listing_id: o for o in tenant_orders().filter(status__in=TenantOrder.OPEN)}
    rows = []
    for listing in Listing.objects.select_related("partner").filter(active=True).order_by("name"):
        order = open_orders.get(listing.pk)
        rows.append({
            "id": listing.pk, "slug": listing.slug, "name": listing.name, "kind": listing.kind,
            "description": listing.description, "partner": {"id": listing.partner_id, "name": listing.partner.name},
            "price_cents": listing.price_cents, "currency": listing.currency, "billing": listing.billing,
            "price_display": money(listing.price_cents, listing.currency),
            "features": listing.features, "packs": listing.packs,
            "owned": bool(order and order.status == TenantOrder.Status.PAID),
            "order": order_json(order) if order else None,
        })
    return rows


# --- partner reporting (platform staff) ------------------------------------------------------


def sales_report(*, partner_id: int | None = None) -> dict:
    """Sales by partner, tenant and month (UTC, by the month the order was paid), with
    refunds counted in the month they happened, and each partner's payouts."""
    paid = TenantOrder.dangerously_all_tenants.filter(paid_at__isnull=False)
    if partner_id:
        paid = paid.filter(partner_id=partner_id)
    sales = (paid.annotate(month=TruncMonth("paid_at"))
             .values("month", "partner_id", "partner__name", "tenant_id", "tenant__slug", "currency")
             .annotate(orders=Count("id"), cents=Sum("price_cents")).order_by("month", "partner__name", "tenant__slug"))
    refunds = (paid.filter(status=TenantOrder.Status.REFUNDED)
               .annotate(month=TruncMonth("closed_at"))
               .values("month", "partner_id", "partner__name", "tenant_id", "tenant__slug", "currency")
               .annotate(cents=Sum("refunded_cents")))
    refunded = {(r["month"], r["partner_id"], r["tenant_id"], r["currency"]): r for r in refunds}
    rows = []
    for row in sales:
        key = (row["month"], row["partner_id"], row["tenant_id"], row["currency"])
        rows.append({"period": row["month"].strftime("%Y-%m"), "partner_id": row["partner_id"],
                     "partner": row["partner__name"], "tenant": row["tenant__slug"], "currency": row["currency"],
                     "orders": row["orders"], "sales_cents": row["cents"],
                     "refunds_cents": (refunded.pop(key, None) or {}).get("cents", 0)})
    renewals = OrderRenewal.objects.all() if not partner_id else OrderRenewal.objects.filter(partner_id=partner_id)
    by_key = {(r["period"], r["partner_id"], r["tenant"], r["currency"]): r for r in rows}
    for r in (renewals.annotate(month=TruncMonth("paid_at"))
              .values("month", "partner_id", "partner__name", "order__tenant__slug", "currency")
              .annotate(renewed=Count("id"), cents=Sum("amount_cents"))):
        key = (r["month"].strftime("%Y-%m"), r["partner_id"], r["order__tenant__slug"], r["currency"])
        row = by_key.get(key)
        if row is None:
            row = by_key[key] = {"period": key[0], "partner_id": r["partner_id"], "partner": r["partner__name"],
                                 "tenant": key[2], "currency": r["currency"], "orders": 0, "sales_cents": 0,
                                 "refunds_cents": 0}
            rows.append(row)
        row["orders"] += r["renewed"]  # a renewal counts as a sale of its month
        row["sales_cents"] += r["cents"]
    for r in refunded.values():  # refunds in months without sales
        rows.append({"period": r["month"].strftime("%Y-%m"), "partner_id": r["partner_id"], "partner": r["partner__name"],
                     "tenant": r["tenant__slug"], "currency": r["currency"], "orders": 0, "sales_cents": 0,
                     "refunds_cents": r["cents"]})
    by_period: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    for row in rows:
        by_period[row["period"]][row["partner"]] += row["sales_cents"] - row["refunds_cents"]
    payouts = Payout.objects.select_related("partner").order_by("-period", "partner__name")
    if partner_id:
        payouts = payouts.filter(partner_id=partner_id)
    for row in rows:
        row["net_cents"] = row["sales_cents"] - row["refunds_cents"]
    return {"rows": sorted(rows, key=lambda r: (r["period"], r["partner"], str(r["tenant"]))),
            "by_period": {p: dict(v) for p, v in sorted(by_period.items())}, "payouts": list(payouts)}
