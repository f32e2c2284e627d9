"""Marketplace routes: `api_urlpatterns` go under /api/ (tenant routes: /api/marketplace is
in LEVQOR_TENANT_ROUTE_PREFIXES), `urlpatterns` at the root (portal and staff pages)."""
from django.urls import path

from marketplace import api, views

api_urlpatterns = [
    path("marketplace/listings", api.MarketplaceListings.as_view(), name="marketplace-listings"),
    path("marketplace/orders", api.MarketplaceOrders.as_view(), name="marketplace-orders"),
    path("marketplace/orders/<int:order_id>", api.MarketplaceOrderDetail.as_view(), name="marketplace-order"),
    path("marketplace/orders/<int:order_id>/cancel", api.MarketplaceOrderCancel.as_view(),
         name="marketplace-order-cancel"),
]

urlpatterns = [
    path("marketplace", views.marketplace, name="marketplace"),
    path("marketplace/buy", views.buy, name="marketplace-buy"),
    path("marketplace/cancel", views.cancel, name="marketplace-cancel"),
    path("staff/marketplace", views.staff_dashboard, name="staff-marketplace"),
]
