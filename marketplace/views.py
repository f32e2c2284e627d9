"""Marketplace pages: `/marketplace` for org admins (portal) and `/staff/marketplace`,
the partner dashboard for platform staff. Thin: they call services and selectors."""
from __future__ import annotations

from django.contrib import messages
from django.contrib.admin.views.decorators import staff_member_required
from django.shortcuts import redirect, render
from django.views.decorators.http import require_POST

from levqor.errors import APIError, error_response
from marketplace import api, selectors, services
from marketplace.models import Partner
from policy.engine import decide
from runtime import charts
from tenants.portal import portal_page, posted_id

COLORS = ["#3b5bdb", "#e8590c", "#2f9e44", "#ae3ec9", "#f59f00", "#1098ad"]


@portal_page("marketplace:read")
def marketplace(request):
    ctx = request.tenant
    can_order = decide(plan=ctx.plan, role=request.member.role, action="marketplace:order", granted=ctx.granted)
    checkout = request.GET.get("checkout")
    if checkout == "success":
        messages.success(request, "Payment received by Stripe. The module is enabled as soon as Stripe confirms it "
                                  "(usually within seconds); refresh to see it.")
    elif checkout == "canceled":
        messages.info(request, "Checkout canceled; nothing was charged. The order stays pending until it expires.")
    return render(request, "portal/marketplace.html", {
        "ctx": ctx, "payments_configured": services.payments_configured(), "can_order": bool(can_order),
        "order_rationale": can_order.rationale, "listings": selectors.listings_for_tenant(),
        "orders": [selectors.order_json(o) for o in selectors.tenant_orders()[:50]],
        "features": sorted(ctx.features)})


@require_POST
@portal_page("marketplace:order")
def buy(request):
    listing_id = posted_id(request, "listing_id")
    success_url, cancel_url = api.checkout_return_urls(request)
    try:
        order, _ = services.order_create(listing_id=listing_id, actor=request.principal.actor,
                                         success_url=success_url, cancel_url=cancel_url)
    except APIError as exc:
        messages.error(request, exc.message)
        return redirect("marketplace")
    return redirect(order.checkout_url)


@require_POST
@portal_page("marketplace:order")
def cancel(request):
    try:
        order = services.order_cancel(order_id=posted_id(request, "order_id"), actor=request.principal.actor)
    except APIError as exc:
        messages.error(request, exc.message)
    else:
        messages.success(request, f"Order {order.pk} is {order.status}.")
    return redirect("marketplace")


@staff_member_required
def staff_dashboard(request):
    """Sales by partner, tenant and month, payouts, and a chart of net sales per month."""
    raw = request.GET.get("partner", "")
    if raw and not (raw.isascii() and raw.isdigit() and len(raw) < 18):
        return error_response(400, "invalid_input", "partner must be a partner id", {"param": "partner"})
    partner_id = int(raw) if raw else None
    report = selectors.sales_report(partner_id=partner_id)
    periods = list(report["by_period"])
    partners = sorted({name for figures in report["by_period"].values() for name in figures})
    series = [(name, [report["by_period"][p].get(name, 0) / 100 for p in periods], COLORS[i % len(COLORS)])
              for i, name in enumerate(partners)]
    chart = charts.column_chart("Net marketplace sales per month", periods, series,
                                "sales minus refunds, in currency units (month paid / refunded, UTC)")
    return render(request, "marketplace/staff.html", {
        "report": report, "chart": chart, "partners": Partner.objects.order_by("name"), "partner_id": partner_id})
