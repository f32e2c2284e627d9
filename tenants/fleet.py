"""Migrating the fleet: every tenant schema and database that is behind the blueprint.

A tenant is checked with one cheap query (does its `django_migrations` hold every
expected row?) and only tenants that are behind load Django's migration graph.
"""
from __future__ import annotations

import sys

from django.db import connection, connections

from tenants import blueprint, broker
from tenants.progress import ProgressBar


def _behind_schemas(schemas: list[str], expected: set[tuple[str, str]]) -> list[str]:
    if not schemas or not expected:
        return []
    pairs = ", ".join(["(%s, %s)"] * len(expected))
    params_pairs = [value for pair in sorted(expected) for value in pair]
    behind = []
    with connection.cursor() as cursor:
        for start in range(0, len(schemas), 200):
            chunk = schemas[start : start + 200]
            parts, params = [], []
            for schema in chunk:
                parts.append(
                    f'SELECT %s, count(*) FROM {blueprint._quote(schema)}.django_migrations WHERE (app, name) IN ({pairs})'
                )
                params.extend([schema, *params_pairs])
            cursor.execute(" UNION ALL ".join(parts), params)
            behind.extend(schema for schema, count in cursor.fetchall() if count < len(expected))
    return behind


def migrate_fleet(*, stdout=None) -> dict:
    from tenants.models import Tenant

    expected = blueprint.expected_migrations()
    tenants = list(
        Tenant.objects.exclude(status__in=[Tenant.Status.DELETED]).exclude(status=Tenant.Status.PROVISIONING)
        .order_by("id")
    )
    schema_tenants = [t for t in tenants if t.isolation == Tenant.Isolation.SCHEMA and blueprint.schema_exists(t.schema_name)]
    behind = set(_behind_schemas([t.schema_name for t in schema_tenants], expected))
    db_tenants = [t for t in tenants if t.isolation == Tenant.Isolation.DATABASE]
    todo = [t for t in schema_tenants if t.schema_name in behind] + db_tenants
    result = {"checked": len(schema_tenants) + len(db_tenants), "migrated": 0}
    bar = ProgressBar(len(todo), label="tenants", stream=stdout) if stdout and todo else None
    for tenant in todo:
        if tenant.isolation == Tenant.Isolation.SCHEMA:
            connection.set_schema(tenant.schema_name)
            try:
                applied = blueprint.migrate_tenant_apps(connection)
            finally:
                connection.set_schema_to_public()
        else:
            alias = broker.alias_for(tenant)
            try:
                applied = blueprint.migrate_tenant_apps(connections[alias])
            finally:
                broker.forget(alias)
        result["migrated"] += 1 if applied else 0
        if bar:
            bar.advance()
    if bar:
        bar.finish()
    if stdout:
        stdout.write(f"Tenants checked: {result['checked']}, migrated: {result['migrated']}.")
    return result
