"""Staff admin. Every change goes through the services; key hashes are never shown."""
from django.contrib import admin, messages

from levqor.errors import APIError
from tenants import services
from tenants.models import Domain, PlatformKey, Tenant, TenantBilling, TenantKey, TenantSSO, TenantUser


def _staff_actor(request) -> str:
    return f"staff:{request.user.get_username()}"


def _bulk(service, verb):
    def action(modeladmin, request, queryset):
        for tenant in queryset:
            try:
                service(tenant=tenant, actor=_staff_actor(request))
            except APIError as exc:
                modeladmin.message_user(request, f"{tenant.slug}: {exc.message}", messages.ERROR)
            else:
                modeladmin.message_user(request, f"{tenant.slug}: {verb}")
    action.short_description = f"{verb.capitalize()} selected tenants"
    action.__name__ = f"action_{verb}"
    return action


class DomainInline(admin.TabularInline):
    model = Domain
    extra = 0


@admin.register(Tenant)
class TenantAdmin(admin.ModelAdmin):
    list_display = ("slug", "name", "plan", "region", "isolation", "status", "provision_ms", "created_at")
    list_filter = ("status", "plan", "region", "isolation")
    search_fields = ("slug", "name", "admin_email")
    readonly_fields = ("schema_name", "status", "isolation", "provision_ms", "provision_steps", "created_at",
                       "status_changed_at", "purge_after", "last_seen_at", "hibernated_at",
                       "plan")  # plan changes go through the service (Stripe first): change_plan or the API
    inlines = [DomainInline]
    actions = [_bulk(services.tenant_suspend, "suspended"), _bulk(services.tenant_resume, "resumed"),
               _bulk(services.tenant_delete, "deleted")]

    def has_add_permission(self, request):
        return False  # tenants are provisioned through the service (API or create_tenant)

    def has_delete_permission(self, request, obj=None):
        return False  # deletion is the soft-delete action, then the purge task


class ScopedAdmin(admin.ModelAdmin):
    def get_queryset(self, request):
        return self.model.dangerously_all_tenants.all()  # staff see every tenant


@admin.register(TenantKey)
class TenantKeyAdmin(ScopedAdmin):
    list_display = ("prefix", "tenant", "role", "name", "created_at", "last_used_at", "revoked_at")
    list_filter = ("role",)
    search_fields = ("prefix", "tenant__slug")
    fields = ("tenant", "prefix", "role", "name", "created_by", "created_at", "last_used_at", "revoked_at")
    readonly_fields = fields

    def has_add_permission(self, request):
        return False


@admin.register(TenantUser)
class TenantUserAdmin(ScopedAdmin):
    list_display = ("user", "tenant", "role", "sso_id", "created_at")
    list_filter = ("role",)
    search_fields = ("user__email", "tenant__slug")


@admin.register(TenantBilling)
class TenantBillingAdmin(ScopedAdmin):
    list_display = ("tenant", "plan", "status", "grace_until", "suspended_for_billing", "stripe_customer_id",
                    "stripe_subscription_id")
    list_filter = ("status", "suspended_for_billing")
    readonly_fields = ("tenant", "plan", "status", "stripe_customer_id", "stripe_subscription_id", "payment_failed_at",
                       "grace_until", "suspended_for_billing", "current_period_end", "metered_usage_json")


@admin.register(PlatformKey)
class PlatformKeyAdmin(admin.ModelAdmin):
    list_display = ("name", "prefix", "created_at", "last_used_at", "revoked_at")
    fields = ("name", "prefix", "created_at", "last_used_at", "revoked_at")
    readonly_fields = fields

    def has_add_permission(self, request):
        return False  # created by `manage.py create_platform_key`, which shows the key once


@admin.register(TenantSSO)
class TenantSSOAdmin(ScopedAdmin):
    list_display = ("tenant", "protocol", "issuer", "client_id", "enabled", "enforced", "tested_at")
    fields = ("tenant", "protocol", "issuer", "client_id", "default_role", "group_roles", "enabled", "enforced",
              "tested_at")  # the client secret is never shown
    readonly_fields = fields

    def has_add_permission(self, request):
        return False  # configured by the tenant's admins in the portal
