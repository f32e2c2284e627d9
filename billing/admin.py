"""Staff admin: what was reported to Stripe and which webhooks arrived (read-only)."""
from django.contrib import admin

from billing.models import MeterReport, WebhookEvent


class ReadOnlyAdmin(admin.ModelAdmin):
    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False


@admin.register(MeterReport)
class MeterReportAdmin(ReadOnlyAdmin):
    list_display = ("tenant_id", "metric", "window", "value", "cumulative", "status", "sent_at")
    list_filter = ("metric", "status", "window")
    search_fields = ("identifier",)

    def get_queryset(self, request):
        return MeterReport.dangerously_all_tenants.all()


@admin.register(WebhookEvent)
class WebhookEventAdmin(ReadOnlyAdmin):
    list_display = ("received_at", "type", "tenant_id", "outcome", "event_id")
    list_filter = ("type",)
    search_fields = ("event_id",)
