"""The migration from the single-tenant layout to multi-tenancy: M1-M4, rollback, drop.

The layout and the switch are described in tenants/legacy.py. Each step is one service
that first works out what it has to do (a Report's `actions`), then, unless it is a dry
run, does it. A step whose work is already done finds no action and writes nothing, so
every step is safe to run twice; a step that cannot run yet raises `PlanRefused` with
what to do first.

    M1  the control plane's tables (shared migrations), the legacy schema (moved out of
        `public` when the pre-tenancy tables are there), the organization `levqor-main`
        pointing at it. No behaviour change: the same data served the same way.
    M2  the tenant schema `t_levqor_main`, the legacy rows copied into it, counts and
        checksums verified. Still no behaviour change: the legacy copy takes the writes.
    M3  in one transaction, with the legacy tables locked against writes: a final copy,
        counts and checksums, the read paths (the ORM through a tenant context) verified
        on the new schema, the audit trail backfilled, writes switched (the organization
        now lives in `t_levqor_main`) and the legacy copy frozen (a trigger refuses writes,
        so a process still holding the old location fails loudly instead of writing
        into a copy nobody reads).
    M4  self-service signups open; the header-less fallback to `levqor-main` closes.
    rollback  the reverse of M3 (copy back, verify, switch, freeze the tenant copy) and
        M2-M4 reopened; data written in either mode is where the organization lives.
    drop  the legacy schema, refused before M4 + 14 days (legacy.DROP_AFTER).

Copies replace the target tables wholesale (TRUNCATE + INSERT ... SELECT, in dependency
order) inside one transaction: set-based, so a large organization costs one pass per
table, and all-or-nothing.
"""
from __future__ import annotations

import dataclasses
import hashlib
from dataclasses import dataclass, field

from django.apps import apps
from django.conf import settings
from django.db import connection, transaction
from django.utils import timezone

from tenants import blueprint, hotcache, legacy

FREEZE_TRIGGER = "levqor_frozen"
# One step at a time, fleet-wide: each step's transaction takes this advisory lock and then
# re-checks where the organization lives, so two operators (or a retry racing a slow
# run) can never copy over the live copy.
PLAN_LOCK = 7_402_190


class PlanRefused(Exception):
    """The step cannot run now; the message says why and what to do first."""


@dataclass
class Report:
    step: str
    dry_run: bool
    actions: list[str] = field(default_factory=list)  # what it did (or, dry, would do)
    notes: list[str] = field(default_factory=list)  # what it found already in place
    details: dict = field(default_factory=dict)
    owner_key: str | None = None  # M1 only, when it registered the organization: shown once

    @property
    def changed(self) -> bool:
        return bool(self.actions)


class _NoProgress:
    def advance(self, n: int = 1) -> None:
        pass

    def finish(self) -> None:
        pass


def _no_progress(total: int, label: str):
    return _NoProgress()


# --- the product tables --------------------------------------------------------------


@dataclass(frozen=True)
class Table:
    model: type
    name: str
    pk: str
    columns: tuple[str, ...]


def product_tables() -> list[Table]:
    """The tenant apps' tables, each after the tables its foreign keys point at."""
    models = [model for label in blueprint.tenant_app_labels()
              for model in apps.get_app_config(label).get_models(include_auto_created=True)
              if model._meta.managed and not model._meta.proxy]
    ordered: list = []
    remaining = list(models)
    while remaining:
        for model in remaining:
            parents = {f.related_model for f in model._meta.concrete_fields
                       if f.is_relation and f.related_model in models and f.related_model is not model}
            if parents <= set(ordered):
                ordered.append(model)
                remaining.remove(model)
                break
        else:
            raise RuntimeError("the tenant apps' foreign keys form a cycle")
    return [Table(model=m, name=m._meta.db_table, pk=m._meta.pk.column,
                  columns=tuple(f.column for f in m._meta.concrete_fields)) for m in ordered]


def _q(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _qual(schema: str, table: Table | str) -> str:
    return f"{_q(schema)}.{_q(table.name if isinstance(table, Table) else table)}"


def _tables_in(schema: str) -> set[str]:
    with connection.cursor() as cursor:
        cursor.execute("SELECT tablename FROM pg_tables WHERE schemaname = %s", [schema])
        return {row[0] for row in cursor.fetchall()}


def _layout(schema: str) -> str:
    """"complete", "none" or "partial": how many of the product tables `schema` holds."""
    present = _tables_in(schema) & {t.name for t in product_tables()}
    if not present:
        return "none"
    return "complete" if len(present) == len(product_tables()) else "partial"


def fingerprints(schema: str) -> dict[str, dict]:
    """{table: {"rows", "checksum"}}: md5 over every row's columns, in primary-key order."""
    result = {}
    with connection.cursor() as cursor:
        for table in product_tables():
            columns = ", ".join(_q(c) for c in table.columns)
            cursor.execute(f"SELECT count(*), md5(coalesce(string_agg(md5(ROW({columns})::text), '' "
                           f"ORDER BY {_q(table.pk)}), '')) FROM {_qual(schema, table)}")
            rows, checksum = cursor.fetchone()
            result[table.name] = {"rows": rows, "checksum": checksum}
    return result


def _differences(source: dict, target: dict) -> list[str]:
    return [name for name in source if source[name] != target.get(name)]


def _read_fingerprints(org, schema: str) -> dict[str, dict]:
    """The same figures read the way the product reads: the ORM inside a tenant context
    whose schema is `schema` (the router and the search_path included)."""
    from tenants.context import build_context, tenant_context

    ctx = dataclasses.replace(build_context(org), schema_name=schema, isolation="schema", db_alias=None)
    result = {}
    with tenant_context(ctx):
        for table in product_tables():
            fields = [f.attname for f in table.model._meta.concrete_fields]
            digest, rows = hashlib.sha256(), 0
            for row in table.model._base_manager.order_by("pk").values_list(*fields).iterator(chunk_size=2000):
                digest.update(repr(row).encode())
                rows += 1
            result[table.name] = {"rows": rows, "checksum": digest.hexdigest()}
    return result


def _lock(cursor, schema: str) -> None:
    # SHARE: readers go on, writers wait for the end of this transaction.
    names = ", ".join(_qual(schema, t) for t in product_tables())
    cursor.execute(f"LOCK TABLE {names} IN SHARE MODE")


def _replace(cursor, source: str, target: str, progress) -> None:
    bar = progress(len(product_tables()), f"copying {source} -> {target}")
    cursor.execute("TRUNCATE " + ", ".join(_qual(target, t) for t in product_tables()))
    for table in product_tables():
        columns = ", ".join(_q(c) for c in table.columns)
        cursor.execute(f"INSERT INTO {_qual(target, table)} ({columns}) SELECT {columns} FROM {_qual(source, table)}")
        bar.advance()
    bar.finish()


def _copy_verified(cursor, source: str, target: str, progress) -> dict:
    """Replace `target`'s rows by `source`'s and prove they match; raises (and the caller's
    transaction rolls back) when they do not."""
    _lock(cursor, source)
    _unfreeze(cursor, target)
    _replace(cursor, source, target, progress)
    found_source, found_target = fingerprints(source), fingerprints(target)
    differing = _differences(found_source, found_target)
    if differing:
        raise PlanRefused(f"copy of {source} to {target} does not verify: {', '.join(differing)} differ")
    return found_source


def _verify_read_paths(org, source: str, target: str) -> None:
    before, after = _read_fingerprints(org, source), _read_fingerprints(org, target)
    differing = _differences(before, after)
    if differing:
        raise PlanRefused(f"read paths on {target} do not return what {source} holds: {', '.join(differing)}")


def _freeze(cursor, schema: str) -> None:
    cursor.execute(
        f"CREATE OR REPLACE FUNCTION {_q(schema)}.{FREEZE_TRIGGER}() RETURNS trigger LANGUAGE plpgsql AS $$ "
        f"BEGIN RAISE EXCEPTION 'levqor-main no longer lives in schema %: this copy is read-only', TG_TABLE_SCHEMA "
        f"USING ERRCODE = 'read_only_sql_transaction'; END $$")
    for table in product_tables():
        cursor.execute(f"DROP TRIGGER IF EXISTS {FREEZE_TRIGGER} ON {_qual(schema, table)}")
        cursor.execute(f"CREATE TRIGGER {FREEZE_TRIGGER} BEFORE INSERT OR UPDATE OR DELETE OR TRUNCATE "
                       f"ON {_qual(schema, table)} FOR EACH STATEMENT EXECUTE FUNCTION {_q(schema)}.{FREEZE_TRIGGER}()")


def _unfreeze(cursor, schema: str) -> None:
    for table in product_tables():
        cursor.execute(f"DROP TRIGGER IF EXISTS {FREEZE_TRIGGER} ON {_qual(schema, table)}")


def is_frozen(schema: str) -> bool:
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1 FROM pg_trigger t JOIN pg_class c ON c.oid = t.tgrelid "
                       "JOIN pg_namespace n ON n.oid = c.relnamespace WHERE t.tgname = %s AND n.nspname = %s LIMIT 1",
                       [FREEZE_TRIGGER, schema])
        return cursor.fetchone() is not None


def _bring_current(schema: str) -> int:
    """Apply the tenant apps' pending migrations to `schema` (a copy the fleet migration
    does not visit: the one the organization does not live in)."""
    previous = connection.schema_name
    connection.set_schema(schema)
    try:
        return blueprint.migrate_tenant_apps(connection)
    finally:
        connection.set_schema_to_public() if previous == settings.PUBLIC_SCHEMA_NAME else connection.set_schema(previous)


# --- the recorded state -----------------------------------------------------------------


def _locked_org(cursor, *, lives_in: str):
    from tenants.models import Tenant

    cursor.execute("SELECT pg_advisory_xact_lock(%s)", [PLAN_LOCK])
    org = Tenant.objects.select_for_update().get(slug=legacy.ORG_SLUG)
    if org.schema_name != lives_in:
        raise PlanRefused(f"{legacy.ORG_SLUG} moved to {org.schema_name} while this step ran (another run?): "
                          f"run the step again")
    return org


def _record(step: str, *, actor: str, details: dict, org=None) -> None:
    """Mark `step` done now (with an audit event on the organization's trail)."""
    from compliance import audit
    from tenants.models import TenancyMigrationStep

    row, _ = TenancyMigrationStep.objects.get_or_create(step=step)
    history = list(row.details.get("history", []))[-20:]
    history.append({"done_at": timezone.now().isoformat(), "actor": actor})
    row.done_at = timezone.now()
    row.details = {**details, "history": history}
    row.save()
    if org is not None:
        audit.record("tenancy.migration_step", tenant_id=org.pk, actor=actor,
                     metadata={"step": step, **{k: v for k, v in details.items() if k != "tables"}})
    hotcache.bump()


def _reopen(steps: tuple[str, ...]) -> None:
    from tenants.models import TenancyMigrationStep

    TenancyMigrationStep.objects.filter(step__in=steps).update(done_at=None, updated_at=timezone.now())


def _require(done: dict, step: str, then: str) -> None:
    if step not in done:
        raise PlanRefused(f"{step.upper()} has not run: run manage.py tenancy_{step} before {then}")


def _schema_exists(name: str) -> bool:
    return blueprint.schema_exists(name)


def _org_or_refuse():
    org = legacy.organization()
    if org is None:
        raise PlanRefused(f"there is no organization {legacy.ORG_SLUG}: run manage.py tenancy_m1 first")
    return org


def _pending_shared_migrations() -> list[str]:
    from django.db.migrations.executor import MigrationExecutor

    executor = MigrationExecutor(connection)
    plan = executor.migration_plan(executor.loader.graph.leaf_nodes())
    return [f"{m.app_label}.{m.name}" for m, _ in plan]


# --- M1 -----------------------------------------------------------------------------------


def m1_prepare(*, dry_run: bool, actor: str, progress=_no_progress) -> Report:
    from tenants.models import Tenant

    report = Report("m1", dry_run)
    schema = legacy.legacy_schema()
    pending = _pending_shared_migrations()
    if pending:
        report.actions.append(f"apply {len(pending)} shared migrations ({', '.join(pending[:5])}"
                              f"{', ...' if len(pending) > 5 else ''})")
    else:
        report.notes.append("shared migrations: all applied")
    done = legacy.steps_done()
    others = _control_plane_read(lambda: Tenant.objects.exclude(slug=legacy.ORG_SLUG).count(), 0)
    if "m1" not in done and others:
        raise PlanRefused(f"this database already serves {others} tenants: it is multi-tenant, and has no "
                          f"single-tenant layout to migrate")
    in_legacy, in_public = _layout(schema), _layout(settings.PUBLIC_SCHEMA_NAME)
    if "partial" in (in_legacy, in_public):
        raise PlanRefused(f"the product tables are incomplete (schema {schema}: {in_legacy}, public: {in_public}); "
                          f"restore them before migrating")
    if in_legacy == "complete":
        report.notes.append(f"legacy layout: the product tables are in schema {schema}")
        if in_public == "complete":
            report.notes.append("product tables are also in public: left alone, not served; inspect them by hand")
    elif in_public == "complete":
        report.actions.append(f"move the product tables from public to schema {schema} (no tenant's search_path "
                              f"reaches them there)")
    else:
        report.actions.append(f"create the legacy layout: empty product tables in schema {schema}")
    org = _control_plane_read(legacy.organization, None)
    if org is None:
        report.actions.append(f"register the organization {legacy.ORG_SLUG} (plan {settings.LEVQOR_LEGACY_PLAN}) "
                              f"on schema {schema} and issue its owner key")
    else:
        report.notes.append(f"organization {legacy.ORG_SLUG} lives in schema {org.schema_name}")
    if "tenants.middleware.TenantContextMiddleware" in settings.MIDDLEWARE:
        report.notes.append(f"tenant middleware installed (TENANCY_ENABLED={settings.TENANCY_ENABLED})")
    else:
        raise PlanRefused("tenants.middleware.TenantContextMiddleware is not in MIDDLEWARE")
    if "m1" not in done:
        report.actions.append("record M1")
    if dry_run or not report.changed:
        return report

    bar = progress(len(report.actions), "M1")
    if pending:
        from django.core.management import call_command

        call_command("migrate", shared_only=True, verbosity=0, interactive=False)
        bar.advance()
    if in_legacy != "complete":
        _create_legacy_layout(schema, move_from_public=in_public == "complete")
        bar.advance()
    if org is None:
        org, report.owner_key = _register_organization(schema, actor=actor)
        bar.advance()
    if "m1" not in done:
        _record("m1", actor=actor, org=org, details={"legacy_schema": schema, "shared_migrations_applied": len(pending)})
        bar.advance()
    bar.finish()
    return report


def _control_plane_read(read, missing):
    """`read()`, or `missing` on a database whose control-plane tables M1 has yet to add."""
    if "tenants" not in _tables_in(settings.PUBLIC_SCHEMA_NAME):
        return missing
    return read()


def _create_legacy_layout(schema: str, *, move_from_public: bool) -> None:
    if not move_from_public:
        blueprint.create_tenant_schema(schema)
        return
    labels = blueprint.tenant_app_labels()
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute(f"CREATE SCHEMA IF NOT EXISTS {_q(schema)}")
        for table in product_tables():  # catalog-only: indexes, constraints and sequences follow
            cursor.execute(f"ALTER TABLE {_qual('public', table)} SET SCHEMA {_q(schema)}")
        # The schema's own migration history, as every tenant schema has (the fleet
        # migration reads it).
        cursor.execute(f"CREATE TABLE IF NOT EXISTS {_q(schema)}.django_migrations "
                       f"(LIKE public.django_migrations INCLUDING ALL)")
        cursor.execute(f"INSERT INTO {_q(schema)}.django_migrations (app, name, applied) "
                       f"SELECT app, name, applied FROM public.django_migrations WHERE app = ANY(%s)", [labels])
    _bring_current(schema)


def _register_organization(schema: str, *, actor: str):
    from compliance import audit
    from policy.plans import plan_limits
    from tenants.models import Tenant, TenantRuntime
    from tenants.services import key_create_for_tenant

    with transaction.atomic():
        org = Tenant.objects.create(
            name="Levqor", slug=legacy.ORG_SLUG, plan=settings.LEVQOR_LEGACY_PLAN, region=settings.LEVQOR_DEFAULT_REGION,
            isolation=Tenant.Isolation.SCHEMA, schema_name=schema, status=Tenant.Status.ACTIVE,
            status_changed_at=timezone.now())
        TenantRuntime.dangerously_all_tenants.update_or_create(
            tenant=org, defaults={"env_json": {"region": org.region}, "limits_json": plan_limits(org.plan),
                                  "domain": f"{org.slug}.{settings.LEVQOR_BASE_DOMAIN}"})
        audit.record("tenant.created", tenant_id=org.pk, actor=actor,
                     metadata={"plan": org.plan, "region": org.region, "isolation": org.isolation,
                               "internal": True, "schema": schema})
        _, plaintext = key_create_for_tenant(tenant=org, role="owner", name="owner (single-tenant)", actor=actor)
        hotcache.bump()
    return org, plaintext


# --- M2 -----------------------------------------------------------------------------------


def m2_copy(*, dry_run: bool, actor: str, progress=_no_progress) -> Report:
    report = Report("m2", dry_run)
    done = legacy.steps_done()
    _require(done, "m1", "M2")
    org = _org_or_refuse()
    source, target = legacy.legacy_schema(), legacy.tenant_schema()
    if org.schema_name == target:
        report.notes.append(f"{legacy.ORG_SLUG} already lives in {target} (M3 switched writes): nothing to move")
        return report
    if org.schema_name != source:
        raise PlanRefused(f"{legacy.ORG_SLUG} lives in {org.schema_name}, neither {source} nor {target}")
    found = fingerprints(source)
    rows = sum(t["rows"] for t in found.values())
    if not _schema_exists(target):
        report.actions.append(f"create the tenant schema {target}")
        report.actions.append(f"copy {rows} rows in {len(found)} tables from {source}; verify counts and checksums")
    elif _differences(found, fingerprints(target)) or is_frozen(target):
        report.actions.append(f"copy {rows} rows in {len(found)} tables from {source} to {target} (replacing its "
                              f"earlier copy); verify counts and checksums")
    else:
        report.notes.append(f"{target} holds the same {rows} rows as {source} (counts and checksums)")
    if "m2" not in done:
        report.actions.append("record M2")
    report.details = {"tables": found}
    if dry_run or not report.changed:
        return report

    blueprint.create_tenant_schema(target)
    _bring_current(target)
    with transaction.atomic(), connection.cursor() as cursor:
        org = _locked_org(cursor, lives_in=source)
        report.details["tables"] = _copy_verified(cursor, source, target, progress)
        _record("m2", actor=actor, org=org, details={"source": source, "target": target, "rows": rows,
                                                     "tables": report.details["tables"]})
    return report


# --- M3 -----------------------------------------------------------------------------------


def m3_switch(*, dry_run: bool, actor: str, progress=_no_progress) -> Report:
    from compliance import audit

    report = Report("m3", dry_run)
    done = legacy.steps_done()
    _require(done, "m2", "M3")
    org = _org_or_refuse()
    source, target = legacy.legacy_schema(), legacy.tenant_schema()
    if org.schema_name == target:
        report.notes.append(f"writes already switched: {legacy.ORG_SLUG} lives in {target}")
        return report
    found = fingerprints(source)
    report.actions += [
        f"lock {source} against writes; final copy to {target}; verify counts and checksums",
        f"verify read paths: the ORM through {legacy.ORG_SLUG}'s context returns the same rows from {target}",
        f"backfill the audit trail: {len(found)} tenancy.legacy_imported events "
        f"({sum(t['rows'] for t in found.values())} rows)",
        f"switch writes: {legacy.ORG_SLUG} lives in {target}; {source} is frozen read-only (the rollback copy)",
        "record M3",
    ]
    if dry_run:
        return report

    _bring_current(target)  # migrations, outside the move's transaction
    with transaction.atomic(), connection.cursor() as cursor:
        org, tables = _move_org(cursor, source, target, progress)
        for name, figures in tables.items():
            audit.record("tenancy.legacy_imported", tenant_id=org.pk, actor=actor,
                         metadata={"table": name, "rows": figures["rows"], "checksum": figures["checksum"],
                                   "from": source, "to": target})
        _record("m3", actor=actor, org=org, details={"from": source, "to": target, "tables": tables})
    report.details = {"tables": tables}
    return report


def _move_org(cursor, source: str, target: str, progress):
    """M3 and the rollback, one direction each (`target` already brought current): under
    the organization's lock, the final
    copy of `source` into `target` (verified), the ORM's read paths checked, the
    organization switched to `target` and `source` frozen. Returns (org, tables)."""
    from tenants.models import Tenant

    org = _locked_org(cursor, lives_in=source)
    tables = _copy_verified(cursor, source, target, progress)
    _verify_read_paths(org, source, target)
    Tenant.objects.filter(pk=org.pk).update(schema_name=target)
    _freeze(cursor, source)
    return org, tables


# --- M4 -----------------------------------------------------------------------------------


def m4_open(*, dry_run: bool, actor: str, progress=_no_progress) -> Report:
    report = Report("m4", dry_run)
    done = legacy.steps_done()
    _require(done, "m3", "M4")
    org = _org_or_refuse()
    if org.schema_name != legacy.tenant_schema():
        raise PlanRefused(f"{legacy.ORG_SLUG} lives in {org.schema_name}: run manage.py tenancy_m3 first")
    if "m4" in done:
        report.notes.append(f"M4 ran at {done['m4']:%Y-%m-%d %H:%M} UTC: signups open, legacy path closed")
        return report
    if not settings.TENANCY_ENABLED:
        raise PlanRefused("TENANCY_ENABLED is false: set it to true on every web node and worker first")
    drop_after = timezone.now() + legacy.DROP_AFTER
    report.actions += [
        "open self-service signups (POST /api/tenants)",
        "close the legacy single-tenant path (a tenant route naming no tenant answers 400 tenant_required)",
        f"record M4 (the legacy schema may be dropped from {drop_after:%Y-%m-%d %H:%M} UTC)",
    ]
    if dry_run:
        return report
    with transaction.atomic(), connection.cursor() as cursor:
        org = _locked_org(cursor, lives_in=legacy.tenant_schema())
        _record("m4", actor=actor, org=org, details={"drop_allowed_from": drop_after.isoformat()})
    return report


# --- rollback and drop --------------------------------------------------------------


def rollback(*, dry_run: bool, actor: str, progress=_no_progress) -> Report:
    report = Report("rollback", dry_run)
    done = legacy.steps_done()
    _require(done, "m1", "a rollback")
    org = _org_or_refuse()
    source, target = legacy.tenant_schema(), legacy.legacy_schema()
    reopen = tuple(step for step in ("m2", "m3", "m4") if step in done)
    if org.schema_name == target:
        report.notes.append(f"{legacy.ORG_SLUG} already lives in the legacy schema {target}")
        if reopen:
            report.actions.append(f"reopen {', '.join(s.upper() for s in reopen)} (the copy in {source} is unused)")
        if not dry_run and reopen:
            with transaction.atomic(), connection.cursor() as cursor:
                org = _locked_org(cursor, lives_in=target)
                _reopen(reopen)
                _record("rollback", actor=actor, org=org, details={"reopened": list(reopen)})
        return report
    if "drop" in done or _layout(target) != "complete":
        raise PlanRefused(f"the legacy schema {target} was dropped: there is no single-tenant layout to roll back to")
    found = fingerprints(source)
    report.actions += [
        f"lock {source} against writes; copy its {sum(t['rows'] for t in found.values())} rows back to {target}; "
        f"verify counts, checksums and read paths",
        f"switch writes: {legacy.ORG_SLUG} lives in {target} again; {source} is frozen read-only",
        f"reopen {', '.join(s.upper() for s in reopen) or 'nothing'} (signups close, the legacy path reopens)",
    ]
    if dry_run:
        return report

    _bring_current(target)  # migrations, outside the move's transaction
    with transaction.atomic(), connection.cursor() as cursor:
        org, tables = _move_org(cursor, source, target, progress)
        _reopen(reopen)
        _record("rollback", actor=actor, org=org, details={"from": source, "to": target, "reopened": list(reopen),
                                                           "tables": tables})
    report.details = {"tables": tables}
    return report


def _refuse_drop_too_early(done: dict, schema: str) -> None:
    """The 14-day rule, computed from the recorded M4 time (a rollback and a re-run of M4
    move it): refuses before M4 + legacy.DROP_AFTER."""
    if "m4" not in done:
        raise PlanRefused(f"refusing to drop {schema}: M4 has not run (or was rolled back), and the legacy layout is "
                          f"the rollback path until M4 + {legacy.DROP_AFTER.days} days")
    allowed_from = done["m4"] + legacy.DROP_AFTER
    now = timezone.now()
    if now < allowed_from:
        left = allowed_from - now
        raise PlanRefused(f"refusing to drop {schema} before {allowed_from:%Y-%m-%d %H:%M} UTC: M4 ran at "
                          f"{done['m4']:%Y-%m-%d %H:%M} UTC and the legacy copy is kept {legacy.DROP_AFTER.days} days "
                          f"for rollback ({left.days} days {left.seconds // 3600} hours left)")


def drop_legacy(*, dry_run: bool, actor: str, progress=_no_progress) -> Report:
    """Drop the legacy schema, never before M4 + 14 days (the rollback path until then)."""
    report = Report("drop", dry_run)
    schema = legacy.legacy_schema()
    _refuse_drop_too_early(legacy.steps_done(), schema)
    org = _org_or_refuse()
    if org.schema_name == schema or schema in (settings.PUBLIC_SCHEMA_NAME, settings.LEVQOR_TEMPLATE_SCHEMA):
        raise PlanRefused(f"refusing to drop {schema}: it is in use")
    if not _schema_exists(schema):
        report.notes.append(f"schema {schema} is already dropped")
        return report
    found = fingerprints(schema) if _layout(schema) == "complete" else {}
    report.actions.append(f"drop schema {schema} ({len(found)} tables, {sum(t['rows'] for t in found.values())} rows; "
                          f"rollback to the single-tenant layout is no longer possible afterwards)")
    if dry_run:
        return report
    bar = progress(1, f"dropping {schema}")
    with transaction.atomic(), connection.cursor() as cursor:
        org = _locked_org(cursor, lives_in=org.schema_name)
        # Again under the plan lock: a rollback (and a fresh M4) may have got in since the
        # check above, moving or clearing the M4 time.
        _refuse_drop_too_early(legacy.steps_done(), schema)
        cursor.execute(f"DROP SCHEMA {_q(schema)} CASCADE")
        _record("drop", actor=actor, org=org, details={"schema": schema, "tables": found})
    bar.finish()
    return report


def status() -> dict:
    """Where the plan stands, for `manage.py tenancy_status`."""
    from tenants.models import TenancyMigrationStep

    org = legacy.organization()
    return {
        "tenancy_enabled": settings.TENANCY_ENABLED,
        "organization_schema": org.schema_name if org else None,
        "legacy_schema": legacy.legacy_schema() if _schema_exists(legacy.legacy_schema()) else None,
        "steps": {row.step: row.done_at for row in TenancyMigrationStep.objects.order_by("step")},
        "signups_open": legacy.signups_open(),
        "headerless_fallback_open": legacy.headerless_fallback_open(),
    }
