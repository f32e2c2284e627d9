"""The tenant blueprint: the migrated shape every tenant schema or database starts from.

- Strategy A: the template schema (settings.LEVQOR_TEMPLATE_SCHEMA) is migrated with the
  tenant apps only. New schemas get the same tables by replaying DDL generated once per
  process from the tenant models, plus the template's `django_migrations` rows, in one
  transaction. Cost does not depend on how many schemas exist (django-tenants'
  clone_schema() walks the whole catalog and slows as the fleet grows).
  `tests/tenants/test_blueprint.py` proves the replayed schema equals the migrated one.
- Strategy B: a template database is migrated the same way; tenant databases are created
  with `CREATE DATABASE ... TEMPLATE`.

Only tenant apps' migrations run here, so a tenant never replays the hundreds of
operations of shared apps such as dj-stripe.
"""
from __future__ import annotations

import logging
from contextlib import contextmanager
from functools import lru_cache

from django.apps import apps
from django.conf import settings
from django.db import connection, connections, transaction
from django.db.migrations.executor import MigrationExecutor
from django.db.migrations.recorder import MigrationRecorder

from tenants import broker

logger = logging.getLogger(__name__)


def tenant_app_labels() -> list[str]:
    return [apps.get_app_config(name.rsplit(".", 1)[-1]).label for name in settings.TENANT_APPS]


# Operations whose whole effect is the SQL they run: safe to replay as captured.
REPLAYABLE_OPERATIONS = {
    "CreateModel", "DeleteModel", "AddField", "RemoveField", "AlterField", "RenameField", "RenameModel",
    "AddIndex", "RemoveIndex", "RenameIndex", "AddConstraint", "RemoveConstraint", "AlterUniqueTogether",
    "AlterIndexTogether", "AlterModelTable", "AlterModelOptions", "AlterModelManagers", "AlterOrderWithRespectTo",
    "RunSQL",
}


def migrate_tenant_apps(conn, *, verbosity: int = 0, capture: bool = False) -> int:
    """Apply the tenant apps' pending migrations on `conn` (schema already selected).

    With `capture`, the SQL each migration runs is stored (TenantMigrationScript) so that
    `tenants.fleet` can replay it on every tenant without loading the migration graph. Each
    script is saved as soon as its migration succeeds: a run interrupted at migration k keeps
    the scripts of 1..k-1 (already applied on the template, so never captured again).
    """
    executor = MigrationExecutor(conn)
    labels = set(tenant_app_labels())
    targets = [node for node in executor.loader.graph.leaf_nodes() if node[0] in labels]
    plan = executor.migration_plan(targets)
    if not plan:
        return 0
    if verbosity:
        logger.info("applying %d tenant migrations on %s", len(plan), _where(conn))
    if not capture:
        executor.migrate(targets, plan=plan)
        return len(plan)
    from tenants.models import TenantMigrationScript

    captured: dict[tuple[str, str], list] = {}
    current: list = [None]

    def progress(action, migration=None, fake=False):
        if action == "apply_start":
            current[0] = (migration.app_label, migration.name)
            captured[current[0]] = []
        elif action == "apply_success":
            key, current[0] = current[0], None  # stop capturing before our own write
            if key and not fake:
                _save_script(TenantMigrationScript, migration, captured.pop(key, []))

    def record(execute, sql, params, many, context):
        text = sql.strip()
        lowered = text[:40].lower()
        if current[0] and not many and not lowered.startswith(("select", "set search_path")) \
                and "django_migrations" not in text:
            captured[current[0]].append([text, list(params) if params else None])
        return execute(sql, params, many, context)

    executor.progress_callback = progress
    with conn.execute_wrapper(record):
        executor.migrate(targets, plan=plan)
    return len(plan)


def _save_script(model, migration, statements: list) -> None:
    replayable = all(type(op).__name__ in REPLAYABLE_OPERATIONS for op in migration.operations)
    model.objects.update_or_create(app=migration.app_label, name=migration.name,
                                   defaults={"statements": statements, "replayable": replayable})


def ordered_expected_migrations() -> list[tuple[str, str]]:
    """The tenant apps' migrations in the order they must run."""
    from django.db.migrations.loader import MigrationLoader

    loader = MigrationLoader(None, ignore_no_migrations=True)
    labels = set(tenant_app_labels())
    ordered: list[tuple[str, str]] = []
    for label in sorted(labels):
        for leaf in loader.graph.leaf_nodes(label):
            for node in loader.graph.forwards_plan(leaf):
                if node[0] in labels and node not in ordered:
                    ordered.append(node)
    return ordered


def expected_migrations() -> set[tuple[str, str]]:
    """The (app, name) pairs a fully migrated tenant has, from the code on disk."""
    from django.db.migrations.loader import MigrationLoader

    loader = MigrationLoader(None, ignore_no_migrations=True)
    labels = set(tenant_app_labels())
    wanted = set()
    for label in labels:
        for leaf in loader.graph.leaf_nodes(label):
            wanted.update(n for n in loader.graph.forwards_plan(leaf) if n[0] in labels)
    return wanted


def _where(conn) -> str:
    return f"{conn.alias}:{getattr(conn, 'schema_name', '')}"


def _quote(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


# --- strategy A: schemas -------------------------------------------------------------


def migrate_template_schema(*, verbosity: int = 0) -> int:
    template = settings.LEVQOR_TEMPLATE_SCHEMA
    with connection.cursor() as cursor:
        cursor.execute(f"CREATE SCHEMA IF NOT EXISTS {_quote(template)}")
    previous = connection.schema_name
    connection.set_schema(template)
    try:
        return migrate_tenant_apps(connection, verbosity=verbosity, capture=True)
    finally:
        connection.set_schema(previous) if previous != settings.PUBLIC_SCHEMA_NAME else connection.set_schema_to_public()


@lru_cache(maxsize=1)
def schema_ddl() -> tuple[str, ...]:
    """CREATE statements for every tenant table, unqualified (run under search_path)."""
    models = [
        model
        for label in tenant_app_labels()
        for model in apps.get_app_config(label).get_models()
        if model._meta.managed and not model._meta.proxy
    ]
    with connection.schema_editor(collect_sql=True, atomic=False) as editor:
        editor.create_model(MigrationRecorder.Migration)
        for model in models:
            editor.create_model(model)
    return tuple(editor.collected_sql)


def schema_exists(schema_name: str) -> bool:
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1 FROM pg_namespace WHERE nspname = %s", [schema_name])
        return cursor.fetchone() is not None


@contextmanager
def in_schema(schema_name: str, *, include_public: bool):
    """Statements on `connection` run with search_path = schema_name (, public), then the
    connection's own schema comes back. Through the connection's schema switch rather than a
    raw `SET LOCAL`: behind PgBouncer in transaction mode every statement carries the
    connection's path (levqor/db/base.py), which would override a SET LOCAL."""
    previous_tenant = getattr(connection, "tenant", None)
    previous_public = connection.include_public_schema
    connection.set_schema(schema_name, include_public=include_public)
    try:
        yield
    finally:
        if previous_tenant is not None:
            connection.set_tenant(previous_tenant, include_public=previous_public)
        else:
            connection.set_schema_to_public()


def create_tenant_schema(schema_name: str) -> None:
    """Create `schema_name` with the blueprint's tables; idempotent."""
    if schema_exists(schema_name):
        return
    template = settings.LEVQOR_TEMPLATE_SCHEMA
    ddl = schema_ddl()
    with transaction.atomic():
        with connection.cursor() as cursor:
            cursor.execute(f"CREATE SCHEMA {_quote(schema_name)}")
        with in_schema(schema_name, include_public=False), connection.cursor() as cursor:
            for statement in ddl:
                cursor.execute(statement)
            cursor.execute(
                f"INSERT INTO {_quote(schema_name)}.django_migrations (app, name, applied) "
                f"SELECT app, name, applied FROM {_quote(template)}.django_migrations"
            )


def drop_tenant_schema(schema_name: str) -> None:
    if schema_name in (settings.PUBLIC_SCHEMA_NAME, settings.LEVQOR_TEMPLATE_SCHEMA):
        raise ValueError(f"refusing to drop {schema_name}")
    with connection.cursor() as cursor:
        cursor.execute(f"DROP SCHEMA IF EXISTS {_quote(schema_name)} CASCADE")


# --- strategy B: databases -----------------------------------------------------------


def migrate_template_database(*, region: str | None = None, verbosity: int = 0) -> int:
    server = broker.server_config(region or settings.LEVQOR_DEFAULT_REGION)
    name = broker.template_database_name()
    broker.ensure_empty_database(server, name)
    alias = broker.TEMPLATE_ALIAS
    broker.forget(alias)
    broker.register(alias, broker.database_dsn(server, name))
    broker.ensure_connection_object(alias)
    try:
        return migrate_tenant_apps(connections[alias], verbosity=verbosity)
    finally:
        # CREATE DATABASE ... TEMPLATE refuses while anyone is connected to the template.
        broker.forget(alias)


def create_tenant_database(region: str, name: str) -> str:
    """Create the tenant database from the template; returns its DSN."""
    server = broker.server_config(region)
    broker.create_database_from_template(server, name)
    return broker.database_dsn(server, name)


def drop_tenant_database(region: str, name: str) -> None:
    broker.drop_database(broker.server_config(region), name)
