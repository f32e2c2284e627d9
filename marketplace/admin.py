"""Staff admin: partners and listings are edited here; orders and payouts are records
(read-only; a paid one-off order can be refunded with the action, through Stripe)."""
from django.contrib import admin, messages

from levqor.admin_base import ReadOnlyAdmin
from levqor.errors import APIError
from marketplace.models import Listing, Partner, Payout, TenantOrder


@admin.register(Partner)
class PartnerAdmin(admin.ModelAdmin):
    list_display = ("name", "slug", "stripe_account_id", "fee_bps", "created_at")
    search_fields = ("name", "slug", "stripe_account_id")
    prepopulated_fields = {"slug": ("name",)}


@admin.register(Listing)
class ListingAdmin(admin.ModelAdmin):
    list_display = ("name", "slug", "kind", "partner", "price_cents", "currency", "billing", "active")
    list_filter = ("kind", "billing", "active", "partner")
    search_fields = ("name", "slug")
    prepopulated_fields = {"slug": ("name",)}
    readonly_fields = ("stripe_price_id", "created_at", "updated_at")

    def has_delete_permission(self, request, obj=None):
        return False  # orders point at it; set active = False instead


@admin.register(TenantOrder)
class TenantOrderAdmin(ReadOnlyAdmin):
    list_display = ("id", "tenant", "listing", "partner", "price_cents", "currency", "status", "ts", "paid_at")
    list_filter = ("status", "billing", "partner")
    search_fields = ("stripe_checkout_session_id", "stripe_payment_intent_id", "tenant__slug", "listing__slug")
    actions = ["refund"]

    def get_queryset(self, request):
        return TenantOrder.dangerously_all_tenants.select_related("tenant", "listing", "partner")

    def has_change_permission(self, request, obj=None):
        return obj is None  # the list (and its action) may show; no row is editable

    @admin.action(description="Refund selected paid one-off orders (Stripe) and disable their modules")
    def refund(self, request, queryset):
        from marketplace import services
        from tenants.context import tenant_context

        actor = f"staff:{request.user.get_username()}"
        for order in queryset.filter(status=TenantOrder.Status.PAID, billing=Listing.Billing.ONE_OFF):
            try:
                with tenant_context(order.tenant):
                    services.order_refund(order=order, actor=actor)
                self.message_user(request, f"Order {order.pk} refunded.")
            except APIError as exc:
                self.message_user(request, f"Order {order.pk}: {exc.message}", level=messages.ERROR)


@admin.register(Payout)
class PayoutAdmin(ReadOnlyAdmin):
    list_display = ("period", "partner", "currency", "gross_cents", "fee_cents", "net_cents", "status",
                    "stripe_transfer_id", "reconciled_at")
    list_filter = ("status", "period", "partner")
