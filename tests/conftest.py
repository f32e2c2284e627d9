"""Test fixtures: real PostgreSQL and Redis (see README: `make test`).

Tenants are provisioned through the real service; strategy A tenants are cloned from
the template schema (milliseconds), never migrated one by one.
"""
from __future__ import annotations

import itertools
import os
import uuid

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
    index = 8 + int(worker.removeprefix("gw") or 0) % 8
    base = settings.REDIS_URL.rsplit("/", 1)[0] if settings.REDIS_URL.count("/") >= 3 else settings.REDIS_URL
    settings.REDIS_URL = f"{base}/{index}"
    levqor_redis.client.cache_clear()
    levqor_redis.client().flushdb()
    yield
    levqor_redis.client.cache_clear()


def _drop_tenant_databases(db_name: str) -> None:
    server = settings.DATABASES["default"]
    conn = psycopg2.connect(dbname="postgres", user=server.get("USER") or None, password=server.get("PASSWORD") or None,
                            host=server.get("HOST") or None, port=server.get("PORT") or None)
    conn.autocommit = True
    with conn.cursor() as cursor:
        cursor.execute("SELECT datname FROM pg_database WHERE datname LIKE %s", [db_name[:40] + "\\_t%"])
        for (name,) in cursor.fetchall():
            cursor.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    conn.close()


@pytest.fixture(scope="session")
def django_db_setup(django_db_setup, django_db_blocker):
    yield
    # Tenant databases (strategy B) live beside the test database; drop them with it.
    _drop_tenant_databases(settings.DATABASES["default"]["NAME"])


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
