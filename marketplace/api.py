"""The marketplace's tenant API (../shared/API.md, docs/api.md):

    GET  /api/marketplace/listings             what this tenant may buy, and what it owns
    GET  /api/marketplace/orders               the tenant's orders, newest first
    POST /api/marketplace/orders               buy {listing_id} -> 201 pending order + checkout_url
    GET  /api/marketplace/orders/{id}          one order
    POST /api/marketplace/orders/{id}/cancel   cancel a pending order, end a subscription, or refund
"""
from __future__ import annotations

from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import extend_schema, inline_serializer
from rest_framework import serializers, status
from rest_framework.response import Response

from levqor.errors import APIError
from marketplace import selectors, services
from tenants.api_base import TenantAPIView

ORDER_CREATE = inline_serializer("MarketplaceOrderCreate", {"listing_id": serializers.IntegerField()})
MAX_ID = 2**63 - 1


def checkout_return_urls(request) -> tuple[str, str]:
    """Where Stripe Checkout sends the buyer back: the portal's marketplace page."""
    base = request.build_absolute_uri("/marketplace")
    return f"{base}?checkout=success&session={{CHECKOUT_SESSION_ID}}", f"{base}?checkout=canceled"


def parse_listing_id(data) -> int:
    if not isinstance(data, dict):
        raise APIError("invalid_input", "The body must be a JSON object.")
    value = data.get("listing_id")
    if value is None:
        raise APIError("invalid_input", "listing_id is required.", details={"field": "listing_id"})
    # Strict: a number (or a string of digits, as forms send); never a bool or a float.
    if isinstance(value, str) and value.isascii() and value.isdigit() and len(value) < 19:
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int) or not 0 < value <= MAX_ID:
        raise APIError("invalid_input", "listing_id must be a positive integer.", details={"field": "listing_id"})
    return value


class MarketplaceListings(TenantAPIView):
    policy_actions = {"GET": "marketplace:read"}

    @extend_schema(responses=OpenApiTypes.OBJECT)
    def get(self, request):
        return Response({"payments_configured": services.payments_configured(),
                         "results": selectors.listings_for_tenant()})


class MarketplaceOrders(TenantAPIView):
    policy_actions = {"GET": "marketplace:read", "POST": "marketplace:order"}

    @extend_schema(operation_id="marketplace_orders_list", responses=OpenApiTypes.OBJECT)
    def get(self, request):
        page = self.paginate_queryset(selectors.tenant_orders())
        return self.get_paginated_response([selectors.order_json(o) for o in page])

    @extend_schema(request=ORDER_CREATE, responses=OpenApiTypes.OBJECT)
    def post(self, request):
        listing_id = parse_listing_id(request.data)
        key = request.headers.get("Idempotency-Key", "").strip()
        if len(key) > 200 or not key.isprintable():  # a NUL byte would reach PostgreSQL, which refuses it
            raise APIError("invalid_input", "Idempotency-Key is at most 200 printable characters.",
                           details={"field": "Idempotency-Key"})
        success_url, cancel_url = checkout_return_urls(request)
        order, created = services.order_create(listing_id=listing_id, actor=request.principal.actor,
                                               success_url=success_url, cancel_url=cancel_url, idempotency_key=key)
        return Response(selectors.order_json(order), status=status.HTTP_201_CREATED if created else status.HTTP_200_OK)


class MarketplaceOrderDetail(TenantAPIView):
    policy_actions = {"GET": "marketplace:read"}

    @extend_schema(responses=OpenApiTypes.OBJECT)
    def get(self, request, order_id: int):
        order = selectors.tenant_orders().filter(pk=order_id).first() if order_id <= MAX_ID else None
        if order is None:
            raise APIError("not_found", f"No order {order_id}.", status_code=404)
        return Response(selectors.order_json(order))


class MarketplaceOrderCancel(TenantAPIView):
    policy_actions = {"POST": "marketplace:order"}

    @extend_schema(request=None, responses=OpenApiTypes.OBJECT)
    def post(self, request, order_id: int):
        if order_id > MAX_ID:
            raise APIError("not_found", f"No order {order_id}.", status_code=404)
        order = services.order_cancel(order_id=order_id, actor=request.principal.actor)
        return Response(selectors.order_json(order))
