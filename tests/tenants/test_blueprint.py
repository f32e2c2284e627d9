"""A schema built from the blueprint DDL is the migrated template schema, table for table."""
import pytest
from django.conf import settings
from django.db import connection

from tenants import blueprint


def _shape(schema: str) -> dict:
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT table_name, column_name, data_type, is_nullable, character_maximum_length "
            "FROM information_schema.columns WHERE table_schema = %s ORDER BY 1, 2", [schema])
        columns = cursor.fetchall()
        cursor.execute(
            "SELECT conrelid::regclass::text, contype, pg_get_constraintdef(c.oid) FROM pg_constraint c "
            "JOIN pg_namespace n ON n.oid = c.connamespace WHERE n.nspname = %s ORDER BY 1, 2, 3", [schema])
        constraints = [(table.split(".")[-1], kind, definition.replace(f"{schema}.", "")) for table, kind, definition in cursor.fetchall()]
        cursor.execute("SELECT tablename, indexdef FROM pg_indexes WHERE schemaname = %s ORDER BY 1, 2", [schema])
        indexes = sorted((table, definition.replace(f"{schema}.", "").split(" ON ", 1)[1]) for table, definition in cursor.fetchall())
        cursor.execute(f'SELECT app, name FROM "{schema}".django_migrations ORDER BY 1, 2')
        migrations = cursor.fetchall()
    return {"columns": columns, "constraints": sorted(constraints), "indexes": indexes, "migrations": migrations}


@pytest.mark.django_db
def test_blueprint_schema_equals_migrated_template():
    blueprint.create_tenant_schema("t_blueprint_check")
    try:
        assert _shape("t_blueprint_check") == _shape(settings.LEVQOR_TEMPLATE_SCHEMA)
    finally:
        blueprint.drop_tenant_schema("t_blueprint_check")


@pytest.mark.django_db
def test_template_holds_only_tenant_app_migrations():
    apps = {app for app, _ in _shape(settings.LEVQOR_TEMPLATE_SCHEMA)["migrations"]}
    assert apps == {"workflows"}  # no dj-stripe or other shared-app replay per tenant


@pytest.mark.django_db
def test_no_missing_migrations():
    from io import StringIO

    from django.core.management import call_command

    out = StringIO()
    call_command("makemigrations", "--check", "--dry-run", stdout=out)
