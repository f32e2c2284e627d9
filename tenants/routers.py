"""Database routing for both isolation strategies.

Tenant apps (settings.TENANT_APPS) are tenant data: with a schema-per-tenant tenant
they go to the default connection (whose search_path the context points at the
tenant's schema); with a database-per-tenant tenant to that tenant's alias. Without a
tenant context they go nowhere: the router raises, so a task or command that forgot
its context fails loudly instead of reading the public schema.
"""
from django.apps import apps
from django.conf import settings
from django.db import connections

from tenants.context import NoTenantContext, current_tenant_or_none
from tenants import broker

TENANT_APP_LABELS = frozenset(app.rsplit(".", 1)[-1] for app in settings.TENANT_APPS)


def _labels(app_names):
    labels = set()
    for name in app_names:
        try:
            labels.add(apps.get_app_config(name.rsplit(".", 1)[-1]).label)
        except LookupError:
            labels.add(name.rsplit(".", 1)[-1])
    return labels


class TenantRouter:
    def _route(self, model, **hints):
        if model._meta.app_label not in TENANT_APP_LABELS:
            return None
        ctx = current_tenant_or_none()
        if ctx is None:
            raise NoTenantContext(f"{model._meta.label} is tenant data and no tenant context is set")
        if ctx.db_alias:
            broker.ensure_connection_object(ctx.db_alias)  # this thread may not have one yet
            return ctx.db_alias
        return "default"

    db_for_read = _route
    db_for_write = _route

    def allow_relation(self, obj1, obj2, **hints):
        return None

    def allow_migrate(self, db, app_label, model_name=None, **hints):
        if app_label == "django_cache":
            return True
        is_tenant_app = app_label in TENANT_APP_LABELS
        if db == "default":
            schema = getattr(connections[db], "schema_name", settings.PUBLIC_SCHEMA_NAME)
            if schema == settings.PUBLIC_SCHEMA_NAME:
                return app_label in _labels(settings.SHARED_APPS)
            return is_tenant_app
        if broker.is_tenant_alias(db):
            return is_tenant_app
        return None
