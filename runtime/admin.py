"""Staff admin of the runtime records: read-only views of metrics rollups and of where each
alert was delivered (the alerts themselves are under Compliance)."""
from django.contrib import admin

from levqor.admin_base import ReadOnlyAdmin
from runtime.models import AlertDelivery, Breaker, BreakerEvent, ExpiredFile, MetricRollup


@admin.register(MetricRollup)
class MetricRollupAdmin(ReadOnlyAdmin):
    list_display = ("tenant_id", "start", "seconds", "requests", "api_calls", "client_errors", "errors", "error_minutes",
                    "latency_max_ms")
    list_filter = ("seconds",)
    search_fields = ("=tenant_id",)
    date_hierarchy = "start"

    def get_queryset(self, request):
        return MetricRollup.dangerously_all_tenants.all()


@admin.register(AlertDelivery)
class AlertDeliveryAdmin(ReadOnlyAdmin):
    list_display = ("alert", "channel", "status", "attempts", "sent_at", "last_error")
    list_filter = ("channel", "status")
    list_select_related = ("alert",)


# --- circuit breakers and the storage lifecycle ----------------------------------------------


@admin.register(Breaker)
class BreakerAdmin(ReadOnlyAdmin):
    """Every breaker that has changed state at least once. `live state` and `failures now`
    are read from Redis (the row follows transitions only); the actions open a breaker
    until it is closed, or close it at once."""

    list_display = ("name", "live_state", "state", "changed_at", "live_failures", "failures", "reason", "actor")
    list_filter = ("state",)
    search_fields = ("name",)
    actions = ("close_breakers", "open_breakers")

    @admin.display(description="live state")
    def live_state(self, obj):
        from runtime import breakers

        return breakers.state(obj.name)

    @admin.display(description="failures now")
    def live_failures(self, obj):
        from runtime import breakers

        return breakers.snapshot(obj.name)["failures"]

    def has_breaker_permission(self, request):
        return request.user.is_active and request.user.is_staff and request.user.has_perm("runtime.change_breaker")

    @admin.action(description="Close the selected breakers", permissions=["breaker"])
    def close_breakers(self, request, queryset):
        from runtime import breakers

        for row in queryset:
            breakers.close(row.name, actor=f"staff:{request.user.get_username()}", reason="closed by staff in the admin")
        self.message_user(request, f"Closed {queryset.count()} breaker(s).")

    @admin.action(description="Open the selected breakers (until closed)", permissions=["breaker"])
    def open_breakers(self, request, queryset):
        from runtime import breakers

        for row in queryset:
            breakers.open(row.name, actor=f"staff:{request.user.get_username()}", reason="opened by staff in the admin")
        self.message_user(request, f"Opened {queryset.count()} breaker(s).")


@admin.register(BreakerEvent)
class BreakerEventAdmin(ReadOnlyAdmin):
    list_display = ("at", "name", "from_state", "to_state", "failures", "reason", "actor")
    list_filter = ("to_state",)
    search_fields = ("name",)
    date_hierarchy = "at"


@admin.register(ExpiredFile)
class ExpiredFileAdmin(ReadOnlyAdmin):
    list_display = ("expired_at", "tenant_id", "kind", "object_id", "region", "size_bytes", "plan", "retention_days",
                    "created_at")
    list_filter = ("kind", "plan")
    search_fields = ("=tenant_id",)


# --- anomalies and auto-heal (runtime/anomaly.py, runtime/autoheal.py) ------------------------

from runtime.models import Anomaly, AutohealRun, AutohealSwitch  # noqa: E402 - this section's models


@admin.register(Anomaly)
class AnomalyAdmin(ReadOnlyAdmin):
    list_display = ("started_at", "tenant_id", "metric", "explanation", "baseline", "resolved_at")
    list_filter = ("metric", "baseline", ("resolved_at", admin.EmptyFieldListFilter))
    search_fields = ("=tenant_id", "explanation")
    date_hierarchy = "started_at"
    readonly_fields = ("autoheal",)

    def get_queryset(self, request):
        return Anomaly.dangerously_all_tenants.all()

    @admin.display(description="auto-heal")
    def autoheal(self, obj):
        """What the playbooks did for this anomaly (AutohealRun rows, scoped by hand: no tenant context here)."""
        from django.utils.html import format_html_join

        runs = AutohealRun.dangerously_all_tenants.filter(anomaly_id=obj.pk).order_by("created_at")
        return format_html_join("", "<div>{} · <b>{}</b> attempt {}: <b>{}</b> {} {}</div>", (
            (r.created_at.strftime("%Y-%m-%d %H:%M:%S"), r.playbook, r.attempt, r.status, r.error, r.detail_json)
            for r in runs)) or "–"


@admin.register(AutohealRun)
class AutohealRunAdmin(ReadOnlyAdmin):
    list_display = ("created_at", "tenant_id", "playbook", "attempt", "status", "anomaly", "error")
    list_filter = ("playbook", "status")
    search_fields = ("=tenant_id",)
    list_select_related = ("anomaly",)

    def get_queryset(self, request):
        return AutohealRun.dangerously_all_tenants.all()


@admin.register(AutohealSwitch)
class AutohealSwitchAdmin(admin.ModelAdmin):
    """Staff turn playbooks off (or back on) for the fleet (no tenant) or one tenant."""

    list_display = ("playbook", "scope", "enabled", "reason", "changed_by", "updated_at")
    list_filter = ("enabled", "playbook")
    search_fields = ("=tenant_id", "playbook")
    fields = ("tenant_id", "playbook", "enabled", "reason")

    @admin.display(description="scope")
    def scope(self, obj):
        return f"tenant {obj.tenant_id}" if obj.tenant_id else "fleet"

    def get_form(self, request, obj=None, **kwargs):
        from django import forms

        from runtime.autoheal import PLAYBOOKS

        form = super().get_form(request, obj, **kwargs)
        form.base_fields["playbook"] = forms.ChoiceField(choices=[("*", "* (every playbook)")] + [
            (name, f"{name}: {p.description}") for name, p in PLAYBOOKS.items()])
        form.base_fields["tenant_id"].help_text = "empty: the whole fleet"
        return form

    def save_model(self, request, obj, form, change):
        obj.changed_by = f"staff:{request.user.get_username()}"[:200]
        super().save_model(request, obj, form, change)
