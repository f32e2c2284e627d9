from django.apps import AppConfig


class TenantsConfig(AppConfig):
    name = "tenants"
    verbose_name = "Tenants"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self):
        # The provisioning steps this app owns; apps above register theirs in their own ready().
        from django.core.signals import request_finished

        from tenants import broker, provisioning  # noqa: F401

        # Tenant database connections are not in settings.DATABASES, so Django's own
        # end-of-request cleanup does not see them. They are closed after every request:
        # a web thread serving many database-per-tenant tenants would otherwise hold one
        # connection per tenant it ever served (PgBouncer makes reconnecting cheap).
        request_finished.connect(_close_tenant_connections, dispatch_uid="levqor-tenant-db-cleanup")


def _close_tenant_connections(**kwargs):
    from tenants import broker

    broker.close_thread_connections(only_obsolete=False)
