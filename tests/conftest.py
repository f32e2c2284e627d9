"""Test fixtures: real PostgreSQL and Redis (see README: `make test`).

Tenants are provisioned through the real service; strategy A tenants are cloned from
the template schema (milliseconds), never migrated one by one.
"""
from __future__ import annotations

import hashlib
import itertools
import os
import uuid
from pathlib import Path

import psycopg2
import pytest
from django.conf import settings
from rest_framework.test import APIClient

os.environ.setdefault("DJANGO_DEBUG", "true")


@pytest.fixture(scope="session", autouse=True)
def _redis_per_worker():
    """Each xdist worker gets its own Redis database, emptied at start."""
    from levqor import redis as levqor_redis

    worker = os.environ.get("PYTEST_XDIST_WORKER", "gw0")
    # LEVQOR_TEST_REDIS_DB moves the block of databases, so two test sessions can share a
    # Redis (with DATABASE_URL naming another database, they share PostgreSQL too).
    first = int(os.environ.get("LEVQOR_TEST_REDIS_DB", "8"))
    index = (first + int(worker.removeprefix("gw") or 0)) % 16
    base = settings.REDIS_URL.rsplit("/", 1)[0] if settings.REDIS_URL.count("/") >= 3 else settings.REDIS_URL
    settings.REDIS_URL = settings.CELERY_BROKER_URL = settings.CELERY_RESULT_BACKEND = f"{base}/{index}"
    point_celery(settings.REDIS_URL)  # tasks the tests send land in the worker's own database
    levqor_redis.client.cache_clear()
    levqor_redis.client().flushdb()
    yield
    levqor_redis.client.cache_clear()


def point_celery(broker: str, backend: str | None = None) -> None:
    """Send this process's Celery tasks to `broker` from now on.

    The app reads its broker URL once and keeps a pool of connections to it, so changing
    Django's setting alone leaves tasks going to the old Redis.
    """
    from levqor.celery import app

    if app._pool is not None:
        app._pool.force_close_all()
    app._pool = None
    app.amqp._producer_pool = None
    app.conf.broker_url = broker
    app.conf.result_backend = backend or broker


def _maintenance():
    server = settings.DATABASES["default"]
    conn = psycopg2.connect(dbname="postgres", user=server.get("USER") or None, password=server.get("PASSWORD") or None,
                            host=server.get("HOST") or None, port=server.get("PORT") or None)
    conn.autocommit = True
    return conn


def _drop_databases_like(cursor, pattern: str) -> None:
    cursor.execute("SELECT datname FROM pg_database WHERE datname LIKE %s", [pattern])
    for (name,) in cursor.fetchall():
        cursor.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def _migrations_fingerprint() -> str:
    digest = hashlib.sha256()
    root = Path(__file__).resolve().parent.parent
    for path in sorted(root.glob("*/migrations/*.py")) + [root / "requirements.txt", root / "tenants" / "blueprint.py"]:
        digest.update(path.read_bytes())
    return digest.hexdigest()[:16]


def _use_database(name: str) -> None:
    from django.db import connections

    settings.DATABASES["default"]["NAME"] = name
    connections["default"].close()
    connections["default"].settings_dict["NAME"] = name


@pytest.fixture(scope="session")
def django_db_setup(django_db_blocker):
    """Migrate once into a base database, then give each xdist worker a copy of it.

    `CREATE DATABASE ... TEMPLATE` copies the migrated base in well under a second, so
    only the first run after a migration change pays for `migrate` (dj-stripe alone is
    ~45 s); the base is rebuilt when a migration file changes.
    """
    from django.core.management import call_command

    original = settings.DATABASES["default"]["NAME"]
    base = f"test_{original}_base"
    worker = os.environ.get("PYTEST_XDIST_WORKER", "main")
    name = f"test_{original}_{worker}"
    fingerprint = _migrations_fingerprint()
    with django_db_blocker.unblock():
        conn = _maintenance()
        with conn.cursor() as cursor:
            cursor.execute("SELECT pg_advisory_lock(7302)")  # one builder at a time
            cursor.execute("SELECT shobj_description(oid, 'pg_database') FROM pg_database WHERE datname = %s", [base])
            row = cursor.fetchone()
            if row is None or row[0] != fingerprint:
                cursor.execute(f'DROP DATABASE IF EXISTS "{base}" WITH (FORCE)')
                cursor.execute(f'DROP DATABASE IF EXISTS "{base}_tpl" WITH (FORCE)')
                cursor.execute(f'CREATE DATABASE "{base}"')
                _use_database(base)
                call_command("migrate", verbosity=0, interactive=False)
                _use_database(original)
                from django.db import connections

                connections.close_all()
                cursor.execute(f"COMMENT ON DATABASE \"{base}\" IS %s", [fingerprint])
            # A run that was killed leaves its tenant databases behind: start from none.
            _drop_databases_like(cursor, name[:40] + "\\_t%")
            for suffix in ("", "_tpl"):
                cursor.execute(f'DROP DATABASE IF EXISTS "{name}{suffix}" WITH (FORCE)')
                cursor.execute(f'CREATE DATABASE "{name}{suffix}" TEMPLATE "{base}{suffix}"')
            cursor.execute("SELECT pg_advisory_unlock(7302)")
        conn.close()
        _use_database(name)
    yield
    with django_db_blocker.unblock():
        from django.db import connections

        connections.close_all()
        conn = _maintenance()
        with conn.cursor() as cursor:
            # The worker's database, its tenant template and its tenant databases (strategy B).
            _drop_databases_like(cursor, name[:40] + "\\_t%")
            cursor.execute(f'DROP DATABASE IF EXISTS "{name}_tpl" WITH (FORCE)')
            cursor.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        conn.close()


@pytest.fixture(autouse=True)
def _close_tenant_database_connections():
    yield
    from tenants import broker

    broker.close_thread_connections(only_obsolete=False)


_slugs = itertools.count(1)


def unique_slug(prefix: str = "t") -> str:
    return f"{prefix}-{os.getpid() % 10000}-{next(_slugs)}-{uuid.uuid4().hex[:4]}"


@pytest.fixture
def make_tenant(db, settings):
    """Provision a tenant through the service; returns (tenant, owner_api_key)."""
    from tenants import services

    settings.LEVQOR_SIGNUP_RATE = "100000/hour"

    def make(plan: str = "core", slug: str | None = None, name: str | None = None):
        slug = slug or unique_slug(plan[:4])
        result = services.tenant_create(name=name or slug.title(), slug=slug, plan=plan, admin_email=f"owner@{slug}.test",
                                        actor="test")
        return result.tenant, result.api_key

    return make


@pytest.fixture
def api():
    return APIClient()


def prefix_of(key: str) -> str:
    """The public part of a key, as lists and audit trails show it."""
    return "_".join(key.split("_")[:2])


def client_for(key: str | None = None, tenant=None, **headers) -> APIClient:
    client = APIClient()
    credentials = dict(headers)
    if key:
        credentials["HTTP_AUTHORIZATION"] = f"Bearer {key}"
    if tenant is not None:
        credentials["HTTP_X_TENANT_ID"] = str(tenant.slug if hasattr(tenant, "slug") else tenant)
    client.credentials(**credentials)
    return client


@pytest.fixture
def staff_key(db):
    from tenants import services

    _, plaintext = services.platform_key_create(name=f"staff-{uuid.uuid4().hex[:8]}")
    return plaintext
