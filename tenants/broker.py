"""Connection broker for database-per-tenant (strategy B).

Maps a tenant to a Django database alias (`tenant_<id>`) and registers that alias on
demand from the tenant's encrypted DSN, so no tenant database is configured in
settings and no DSN sits in clear anywhere. Also owns the server-level operations on
tenant databases (create from the template database, drop), which need a maintenance
connection outside any transaction.
"""
from __future__ import annotations

import copy
import logging
import threading
from contextlib import contextmanager
from urllib.parse import quote

import dj_database_url
import psycopg2
from django.conf import settings
from django.db import connections
from django.db.utils import load_backend

from tenants import secrets

logger = logging.getLogger(__name__)
_lock = threading.Lock()
ALIAS_PREFIX = "tenant_"
TENANT_DB_ENGINE = "django.db.backends.postgresql"


def alias_name(tenant_id: int) -> str:
    return f"{ALIAS_PREFIX}{tenant_id}"


def is_tenant_alias(alias: str) -> bool:
    return alias.startswith(ALIAS_PREFIX) or alias == TEMPLATE_ALIAS


def alias_for(tenant) -> str:
    alias = alias_name(tenant.id)
    if alias not in _configs:
        from tenants.models import TenantDatabase

        # Platform lookup by the tenant's own id: the context is being built.
        record = TenantDatabase.dangerously_all_tenants.get(tenant_id=tenant.id)
        register(alias, secrets.decrypt(record.dsn_encrypted))
    ensure_connection_object(alias)
    return alias


# Tenant aliases are kept out of settings.DATABASES (connections.settings): they are
# not configuration, they come and go with tenants. Each thread gets its own wrapper on
# first use, like Django's own per-thread connections.
_configs: dict[str, dict] = {}


def register(alias: str, dsn: str) -> None:
    with _lock:
        if alias in _configs:
            return
        config = copy.deepcopy(connections["default"].settings_dict)
        parsed = dj_database_url.parse(dsn)
        for key in ("NAME", "USER", "PASSWORD", "HOST", "PORT"):
            config[key] = parsed.get(key, "")
        config["ENGINE"] = TENANT_DB_ENGINE
        config.pop("SCHEMA", None)
        config["OPTIONS"] = {**parsed.get("OPTIONS", {})}
        _configs[alias] = config


def ensure_connection_object(alias: str) -> None:
    """Give this thread a connection wrapper for `alias` (no network until first query)."""
    if getattr(connections._connections, alias, None) is not None:
        return
    config = _configs.get(alias)
    if config is None:
        raise LookupError(f"database alias {alias} is not registered with the broker")
    backend = load_backend(config["ENGINE"])
    connections[alias] = backend.DatabaseWrapper(copy.deepcopy(config), alias)


def registered_aliases() -> list[str]:
    return list(_configs)


def close_thread_connections(*, only_obsolete: bool = True) -> None:
    """Request end: what Django does for its configured aliases, for ours."""
    for alias in list(_configs):
        conn = getattr(connections._connections, alias, None)
        if conn is not None and conn.connection is not None:
            if only_obsolete:
                conn.close_if_unusable_or_obsolete()
            else:
                conn.close()


def forget(alias: str) -> None:
    """Close this thread's connection to `alias` and drop its registration."""
    with _lock:
        conn = getattr(connections._connections, alias, None)
        if conn is not None:
            try:
                conn.close()
            except Exception:  # already gone with its database
                logger.debug("closing %s failed", alias, exc_info=True)
            try:
                delattr(connections._connections, alias)
            except AttributeError:
                pass
        _configs.pop(alias, None)


# --- server-level operations -------------------------------------------------------

TEMPLATE_ALIAS = "tenant_template"


def server_config(region_name: str) -> dict:
    return settings.LEVQOR_REGIONS[region_name].database


def database_dsn(server: dict, name: str) -> str:
    user = quote(server.get("USER") or "")
    password = f":{quote(server['PASSWORD'])}" if server.get("PASSWORD") else ""
    auth = f"{user}{password}@" if user else ""
    host = server.get("HOST") or ""
    if host.startswith("/"):
        port = f"&port={server['PORT']}" if server.get("PORT") else ""
        return f"postgres://{auth}/{name}?host={quote(host)}{port}"
    port = f":{server['PORT']}" if server.get("PORT") else ""
    return f"postgres://{auth}{host}{port}/{name}"


def template_database_name() -> str:
    # Derived from the main database's name so that parallel test databases (and several
    # deployments on one server) each get their own template.
    return f"{settings.DATABASES['default']['NAME'][:40]}_tpl"


def tenant_database_name(tenant_id: int) -> str:
    return f"{settings.DATABASES['default']['NAME'][:40]}_t{tenant_id}"


@contextmanager
def maintenance_cursor(server: dict):
    conn = psycopg2.connect(
        dbname="postgres",
        user=server.get("USER") or None,
        password=server.get("PASSWORD") or None,
        host=server.get("HOST") or None,
        port=server.get("PORT") or None,
    )
    conn.autocommit = True  # CREATE/DROP DATABASE cannot run in a transaction
    try:
        with conn.cursor() as cursor:
            yield cursor
    finally:
        conn.close()


def database_exists(server: dict, name: str) -> bool:
    with maintenance_cursor(server) as cursor:
        cursor.execute("SELECT 1 FROM pg_database WHERE datname = %s", [name])
        return cursor.fetchone() is not None


def create_database_from_template(server: dict, name: str) -> None:
    with maintenance_cursor(server) as cursor:
        cursor.execute("SELECT 1 FROM pg_database WHERE datname = %s", [name])
        if cursor.fetchone():
            return
        cursor.execute(f'CREATE DATABASE "{name}" TEMPLATE "{template_database_name()}"')
        # Defense in depth: nobody but the owner (and superusers) may even connect.
        cursor.execute(f'REVOKE CONNECT ON DATABASE "{name}" FROM PUBLIC')


def drop_database(server: dict, name: str) -> None:
    with maintenance_cursor(server) as cursor:
        cursor.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def ensure_empty_database(server: dict, name: str) -> bool:
    """Create `name` if missing; True when it was created."""
    with maintenance_cursor(server) as cursor:
        cursor.execute("SELECT 1 FROM pg_database WHERE datname = %s", [name])
        if cursor.fetchone():
            return False
        cursor.execute(f'CREATE DATABASE "{name}"')
        return True
