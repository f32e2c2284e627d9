"""Staff admin: what was reported to Stripe and which webhooks arrived (read-only)."""
from django.contrib import admin

from billing.models import MeterReport, WebhookEvent
from levqor.admin_base import ReadOnlyAdmin


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
