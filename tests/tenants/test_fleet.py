"""Fleet migrations: tenants at the blueprint are skipped, the rest replay the template's
captured SQL (or fall back to the executor), the first failure stops the run."""
import uuid
from io import StringIO

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from django.db import connection

from tenants import blueprint, fleet
from tenants.models import FleetMigrationStatus, TenantMigrationScript


def _forget_last_migration(tenant):
    with connection.cursor() as cursor:
        cursor.execute(f'DELETE FROM "{tenant.schema_name}".django_migrations WHERE app = %s AND name = %s',
                       ["workflows", "0002_alter_workflow_options"])


def _columns(tenant):
    with connection.cursor() as cursor:
        cursor.execute("SELECT column_name FROM information_schema.columns WHERE table_schema = %s "
                       "AND table_name = 'workflows_workflow'", [tenant.schema_name])
        return {row[0] for row in cursor.fetchall()}


@pytest.mark.django_db(transaction=True)  # the parallel wave runs on other connections
def test_current_tenants_are_skipped_and_behind_ones_replayed(make_tenant):
    current, _ = make_tenant()
    behind, _ = make_tenant()
    db_tenant, _ = make_tenant(plan="enterprise")
    _forget_last_migration(behind)
    # The template is migrated first, and what its migration ran is captured for the fleet.
    with connection.cursor() as cursor:
        cursor.execute("DELETE FROM levqor_template.django_migrations WHERE app = %s AND name = %s",
                       ["workflows", "0002_alter_workflow_options"])
    assert blueprint.migrate_template_schema() == 1
    assert TenantMigrationScript.objects.get(app="workflows", name="0002_alter_workflow_options").replayable
    result = fleet.migrate_fleet(workers=2, canary=1)
    assert result["replayed"] == 1 and result["failed"] == 0
    assert FleetMigrationStatus.objects.get(tenant=behind).status == "replayed"
    assert not FleetMigrationStatus.objects.filter(tenant=current).exists()  # never touched: skipped by the cheap check
    assert FleetMigrationStatus.objects.get(tenant=db_tenant).status == "up_to_date"
    assert fleet.migrate_fleet()["replayed"] == 0  # running again resumes: nothing left to do


def test_a_captured_additive_migration_replays_its_ddl(make_tenant):
    tenant, _ = make_tenant()
    script = TenantMigrationScript(app="workflows", name="9999_fleet_note", replayable=True,
                                   statements=[["ALTER TABLE workflows_workflow ADD COLUMN fleet_note text NULL", None]])
    order = [("workflows", "0001_initial"), ("workflows", "0002_alter_workflow_options"), ("workflows", "9999_fleet_note")]
    scripts = {(s.app, s.name): s for s in TenantMigrationScript.objects.filter(replayable=True)}
    scripts[("workflows", "9999_fleet_note")] = script
    how, applied = fleet.migrate_tenant(tenant, order=order, scripts=scripts)
    assert (how, applied) == ("replayed", [("workflows", "9999_fleet_note")])
    assert "fleet_note" in _columns(tenant)
    assert fleet.migrate_tenant(tenant, order=order, scripts=scripts) == ("up_to_date", [])


@pytest.mark.django_db(transaction=True)
def test_the_first_failure_stops_the_run_and_is_recorded(make_tenant):
    tenants = [make_tenant()[0] for _ in range(3)]
    for tenant in tenants:
        _forget_last_migration(tenant)
    with connection.cursor() as cursor:  # the first (canary) tenant is broken
        cursor.execute(f'DROP TABLE "{tenants[0].schema_name}".django_migrations')
    with pytest.raises(fleet.FleetMigrationFailed, match=tenants[0].slug):
        fleet.migrate_fleet(workers=2, canary=1)
    assert FleetMigrationStatus.objects.get(tenant=tenants[0]).status == "failed"
    assert _statuses(tenants[1:]) == ["pending", "pending"]  # the wave after never started


LAST = ("workflows", "0002_alter_workflow_options")


def _has_last_migration(tenant) -> bool:
    with connection.cursor() as cursor:
        cursor.execute(f'SELECT 1 FROM "{tenant.schema_name}".django_migrations WHERE app = %s AND name = %s', list(LAST))
        return cursor.fetchone() is not None


def _break(tenant):
    with connection.cursor() as cursor:
        cursor.execute(f'DROP TABLE "{tenant.schema_name}".django_migrations')


def _repair(tenant):
    """Restore the tenant's django_migrations as it was before it broke: behind by one."""
    with connection.cursor() as cursor:
        cursor.execute(f'CREATE TABLE "{tenant.schema_name}".django_migrations (id bigserial PRIMARY KEY, '
                       f'app varchar(255) NOT NULL, name varchar(255) NOT NULL, applied timestamptz NOT NULL)')
        cursor.execute(f'INSERT INTO "{tenant.schema_name}".django_migrations (app, name, applied) SELECT app, name, '
                       f'applied FROM levqor_template.django_migrations WHERE NOT (app = %s AND name = %s)', list(LAST))


def _release_last_migration():
    """The template migrates first and captures the SQL the fleet replays (a transactional
    test's flush empties the captured scripts, so each test captures its own)."""
    with connection.cursor() as cursor:
        cursor.execute("DELETE FROM levqor_template.django_migrations WHERE app = %s AND name = %s", list(LAST))
    assert blueprint.migrate_template_schema() == 1


def _statuses(tenants) -> list:
    found = dict(FleetMigrationStatus.objects.filter(tenant__in=tenants).values_list("tenant_id", "status"))
    return [found.get(t.pk) for t in tenants]


def _fleet_status(*args) -> str:
    out = StringIO()
    call_command("fleet_status", *args, stdout=out)
    return out.getvalue()


@pytest.mark.django_db(transaction=True)
def test_the_parallel_wave_stops_at_the_first_failure_and_fleet_status_shows_what_never_started(make_tenant):
    tenants = [make_tenant()[0] for _ in range(4)]
    for tenant in tenants:
        _forget_last_migration(tenant)
    _release_last_migration()
    _break(tenants[1])
    with pytest.raises(fleet.FleetMigrationFailed, match=tenants[1].slug):
        fleet.migrate_fleet(workers=1, canary=0)  # no canary wave: the failure happens in the pool
    assert _statuses(tenants) == ["replayed", "failed", "pending", "pending"]
    assert _has_last_migration(tenants[0])
    assert not _has_last_migration(tenants[2]) and not _has_last_migration(tenants[3])  # never started

    summary = _fleet_status()
    assert "failed: 1  pending: 2  replayed: 1" in summary
    assert "2 tenants never started" in summary
    assert tenants[1].slug in summary and "django_migrations" in summary  # the failure and its cause
    assert tenants[2].slug not in summary
    pending = _fleet_status("--status", "pending")
    assert tenants[2].slug in pending and tenants[3].slug in pending
    assert tenants[0].slug not in pending and tenants[1].slug not in pending


@pytest.mark.django_db(transaction=True)
def test_a_run_resumes_after_the_broken_tenant_is_repaired(make_tenant):
    tenants = [make_tenant()[0] for _ in range(3)]
    for tenant in tenants:
        _forget_last_migration(tenant)
    _release_last_migration()
    _break(tenants[1])
    with pytest.raises(fleet.FleetMigrationFailed, match=tenants[1].slug):
        fleet.migrate_fleet(workers=1, canary=1)  # the canary passes; the wave stops at the broken one
    assert _statuses(tenants) == ["replayed", "failed", "pending"]

    _repair(tenants[1])
    result = fleet.migrate_fleet(workers=1, canary=1)
    assert result["failed"] == 0 and result["replayed"] == 2
    # The tenant finished in the first run is skipped by the cheap check: no row this run.
    assert _statuses(tenants) == [None, "replayed", "replayed"]
    assert all(_has_last_migration(t) for t in tenants)
    assert fleet._behind_schemas([t.schema_name for t in tenants], blueprint.expected_migrations()) == []
    assert _fleet_status().splitlines()[0] == "replayed: 2"  # the earlier failure is gone
    assert fleet.migrate_fleet()["behind"] == 0
    assert _statuses(tenants) == [None, None, None]  # a run that found everything current clears the table


@pytest.mark.django_db(transaction=True)
def test_migrate_command_draws_the_bar_to_the_end_only_on_success(make_tenant):
    tenants = [make_tenant()[0] for _ in range(3)]
    for tenant in tenants:
        _forget_last_migration(tenant)
    _release_last_migration()
    _break(tenants[1])
    out, err = StringIO(), StringIO()
    with pytest.raises(CommandError) as failed:
        call_command("migrate", canary=0, fleet_workers=1, interactive=False, stdout=out, stderr=err)
    message = str(failed.value)
    assert tenants[1].slug in message and "stopped at the first failure" in message
    assert "run migrate again to resume" in message
    drawn = out.getvalue()
    assert "1/3 tenants" in drawn and "3/3 tenants" not in drawn  # the bar stops where the run stopped
    assert drawn.endswith("\n")  # the line is ended, so the error does not print over the bar

    _repair(tenants[1])
    out = StringIO()
    call_command("migrate", canary=0, fleet_workers=1, interactive=False, stdout=out, stderr=StringIO())
    drawn = out.getvalue()
    assert "2/2 tenants" in drawn  # the tenant finished before the failure is not counted again
    assert "replayed: 2" in drawn
    assert all(_has_last_migration(t) for t in tenants)


@pytest.mark.django_db
def test_an_interrupted_template_migration_keeps_the_scripts_of_the_migrations_it_finished():
    TenantMigrationScript.objects.filter(app="workflows").delete()
    schema = f"fleet_capture_{uuid.uuid4().hex[:8]}"

    def crash_before_recording(execute, sql, params, many, context):  # the process dies mid-run
        if "django_migrations" in sql and params and LAST[1] in params:
            raise RuntimeError("killed")
        return execute(sql, params, many, context)

    with connection.cursor() as cursor:
        cursor.execute(f'CREATE SCHEMA "{schema}"')
    connection.set_schema(schema)
    try:
        with connection.execute_wrapper(crash_before_recording), pytest.raises(RuntimeError, match="killed"):
            blueprint.migrate_tenant_apps(connection, capture=True)
    finally:
        connection.set_schema_to_public()
    first = TenantMigrationScript.objects.get(app="workflows", name="0001_initial")
    assert first.replayable and any("CREATE TABLE" in sql for sql, _ in first.statements)
    assert not TenantMigrationScript.objects.filter(app="workflows", name=LAST[1]).exists()
