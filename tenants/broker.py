"""Connection broker for database-per-tenant (strategy B).

Maps a tenant to a Django database alias (`tenant_<id>`) and registers that alias on
demand from the tenant's encrypted DSN, so no tenant database is configured in
settings and no DSN sits in clear anywhere. Also owns the server-level operations on
tenant databases (create from the template database, drop), which need a maintenance
connection outside any transaction.

Where a region's server is comes from the region map (`server_config`), not from the
stored DSN: a tenant alias takes its database, role and options from its DSN and its
host and port from its region's current server. A failover (runtime/dr.py) therefore
repoints every tenant database of a region by writing one RegionState row.
"""
from __future__ import annotations

import copy
import functools
import logging
import threading
import time
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
        register(alias, secrets.decrypt(record.dsn_encrypted), region=record.region)
    ensure_connection_object(alias)
    return alias


# Tenant aliases are kept out of settings.DATABASES (connections.settings): they are
# not configuration, they come and go with tenants. Each thread gets its own wrapper on
# first use, like Django's own per-thread connections.
_configs: dict[str, dict] = {}
_regions: dict[str, str] = {}  # alias -> region whose current server it connects to


def register(alias: str, dsn: str, *, region: str | None = None) -> None:
    """Register `alias` from `dsn`. With `region`, the host and port follow the region's
    current server (see module docstring); without, the DSN's own server is used."""
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
        if region is not None:
            _regions[alias] = region


def _address(db: dict) -> tuple[str, str]:
    return str(db.get("HOST") or ""), str(db.get("PORT") or "")


def ensure_connection_object(alias: str) -> None:
    """Give this thread a connection wrapper for `alias` (no network until first query).

    Called on every routed query, so it is also where a thread lets go of a region's
    former primary: a wrapper whose server is no longer the region's current one is
    closed and replaced, unless a transaction is open on it (that transaction must end,
    and fail, where it started)."""
    config = _configs.get(alias)
    if config is None:
        raise LookupError(f"database alias {alias} is not registered with the broker")
    region = _regions.get(alias)
    host, port = _address(server_config(region)) if region is not None else _address(config)
    conn = getattr(connections._connections, alias, None)
    if conn is not None:
        if _address(conn.settings_dict) == (host, port) or conn.in_atomic_block:
            return
        _close_quietly(conn)
    backend = load_backend(config["ENGINE"])
    connections[alias] = backend.DatabaseWrapper({**copy.deepcopy(config), "HOST": host, "PORT": port}, alias)


def _close_quietly(conn) -> None:
    try:
        conn.close()
    except Exception:  # its server is gone: nothing to close cleanly
        logger.debug("closing %s failed", conn.alias, exc_info=True)


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
            _close_quietly(conn)  # already gone with its database
            try:
                delattr(connections._connections, alias)
            except AttributeError:
                pass
        _configs.pop(alias, None)
        _regions.pop(alias, None)


# --- server-level operations -------------------------------------------------------

TEMPLATE_ALIAS = "tenant_template"


def server_config(region_name: str) -> dict:
    """The region's primary server now: its promoted replica after a failover, else the
    server LEVQOR_REGIONS configures.

    A RegionState row is in force only while the settings still name its server as the
    region's replica. Once the operator writes the new topology into LEVQOR_REGIONS (the
    promoted server as primary, a new replica), the row has nothing left to say, so a
    stale row can never override a later configuration."""
    region = settings.LEVQOR_REGIONS[region_name]
    promoted = _promoted_servers().get(region_name)
    if promoted is not None and region.replica_url and _address(promoted) == _url_address(region.replica_url):
        return promoted
    return region.database


@functools.lru_cache(maxsize=64)
def _url_address(url: str) -> tuple[str, str]:
    return _address(dj_database_url.parse(url))


# Each process trusts its copy of the failed-over regions for LEVQOR_REGION_MAP_SECONDS:
# the bound on how long another process keeps connecting to a former primary.
_region_map: dict = {"loaded_at": float("-inf"), "promoted": {}}


def _promoted_servers() -> dict[str, dict]:
    if time.monotonic() - _region_map["loaded_at"] < settings.LEVQOR_REGION_MAP_SECONDS:
        return _region_map["promoted"]
    from runtime.models import RegionState  # the runtime app records failovers; the broker follows them

    promoted = {row.region: dj_database_url.parse(secrets.decrypt(row.database_url_encrypted))
                for row in RegionState.objects.all()}
    _region_map["promoted"] = promoted  # before the time: a reader seeing a fresh time sees these rows
    _region_map["loaded_at"] = time.monotonic()
    return promoted


def refresh_region_map() -> None:
    """Reload the region map now (after a failover in this process) and replace this
    thread's wrappers that still point at a region's former primary."""
    _region_map["loaded_at"] = float("-inf")
    for alias in list(_regions):
        if getattr(connections._connections, alias, None) is not None:
            ensure_connection_object(alias)


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
