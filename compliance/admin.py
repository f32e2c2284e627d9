from django.contrib import admin

from compliance.models import Alert, AuditEvent, AuditStream
from levqor.admin_base import ReadOnlyAdmin


@admin.register(AuditEvent)
class AuditEventAdmin(ReadOnlyAdmin):
    list_display = ("tenant_id", "seq", "event", "actor", "ts")
    list_filter = ("event",)
    search_fields = ("actor", "event")

    def get_queryset(self, request):
        return AuditEvent.dangerously_all_tenants.all()


@admin.register(Alert)
class AlertAdmin(admin.ModelAdmin):
    list_display = ("created_at", "kind", "severity", "tenant_id", "audience", "message", "resolved_at")
    list_filter = ("kind", "severity", "audience")


@admin.register(AuditStream)
class AuditStreamAdmin(admin.ModelAdmin):
    list_display = ("tenant_id", "name", "kind", "url", "state", "cursor_seq", "failures", "last_delivered_at")
    list_filter = ("kind", "state")
    fields = ("tenant_id", "name", "kind", "url", "state", "cursor_seq", "failures", "last_error", "last_delivered_at")
    readonly_fields = fields  # the secret is never shown

    def get_queryset(self, request):
        return AuditStream.dangerously_all_tenants.all()

    def has_add_permission(self, request):
        return False
