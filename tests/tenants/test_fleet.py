"""Fleet migrations: tenants at the blueprint are skipped, the rest replay the template's
captured SQL (or fall back to the executor), the first failure stops the run."""
import pytest
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
    assert not FleetMigrationStatus.objects.filter(tenant__in=tenants[1:]).exists()  # the wave after never started
