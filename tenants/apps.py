from django.apps import AppConfig


class TenantsConfig(AppConfig):
    name = "tenants"
    verbose_name = "Tenants"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self):
        # The provisioning steps this app owns; apps above register theirs in their own ready().
        from django.core.signals import request_finished

        from tenants import openapi, provisioning  # noqa: F401  (registers the OpenAPI key scheme and the steps)

        # Tenant database connections are not in settings.DATABASES, so Django's own
        # end-of-request cleanup does not see them. They are closed after every request:
        # a web thread serving many database-per-tenant tenants would otherwise hold one
        # connection per tenant it ever served (PgBouncer makes reconnecting cheap).
        request_finished.connect(_close_tenant_connections, dispatch_uid="levqor-tenant-db-cleanup")

        # Any saved or deleted tenant, domain or key (the admin included) invalidates the
        # hot cache of every process; queryset updates in the services bump explicitly.
        from django.db.models.signals import post_delete, post_save

        from tenants.models import Domain, Tenant, TenantKey

        from allauth.account.signals import user_logged_in

        user_logged_in.connect(_logged_in, dispatch_uid="levqor-sso-membership")

        for model in (Tenant, Domain, TenantKey):
            post_save.connect(_tenancy_changed, sender=model, dispatch_uid=f"levqor-hot-{model.__name__}-save")
            post_delete.connect(_tenancy_changed, sender=model, dispatch_uid=f"levqor-hot-{model.__name__}-delete")


def _logged_in(request, user, sociallogin=None, **kwargs):
    from tenants.sso import on_social_login

    on_social_login(request, sociallogin)


def _tenancy_changed(**kwargs):
    from tenants import hotcache

    hotcache.bump()


def _close_tenant_connections(**kwargs):
    from tenants import broker

    broker.close_thread_connections(only_obsolete=False)
