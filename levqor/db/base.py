"""Levqor's PostgreSQL backend: django-tenants' schema routing, made safe for PgBouncer in
transaction mode when LEVQOR_DB_POOLING=transaction.

django-tenants sets the tenant's `search_path` once per session. Behind a transaction-mode
pooler the next statement may run on another server connection, whose search_path
belongs to whoever used it last: tenant A's query could read tenant B's schema. In that
mode this backend never sets the session's path; instead every statement carries
`SET LOCAL search_path = <tenant>, public; ` in the same query string, which PostgreSQL
runs as one transaction on one server connection, and which ends with it. Server-side
cursors are off in that mode (settings), as Django requires behind such a pooler.
"""
from django.conf import settings
from django_tenants.postgresql_backend.base import DatabaseWrapper as TenantDatabaseWrapper
from django_tenants.utils import quote_schema_name


class DatabaseWrapper(TenantDatabaseWrapper):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.statement_scoped_paths = getattr(settings, "LEVQOR_DB_POOLING", "session") == "transaction"
        if self.statement_scoped_paths:
            self.execute_wrappers.append(self._with_search_path)

    def _handle_search_path(self, cursor=None):
        if self.statement_scoped_paths:
            return  # carried by every statement instead (see _with_search_path)
        return super()._handle_search_path(cursor)

    def _with_search_path(self, execute, sql, params, many, context):
        paths = ", ".join(quote_schema_name(p) for p in self._get_cursor_search_paths())
        return execute(f"SET LOCAL search_path = {paths}; {sql}", params, many, context)
