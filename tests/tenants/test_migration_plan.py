"""The migration plan M1-M4 and its rollback (tenants/migration_plan.py, tenants/legacy.py).

A pre-tenancy database (the product tables in `public`, one organization's rows) goes
through M1-M4, back to the single-tenant layout and forward again. At every step the
organization's data is compared as the API serves it and as the tables hold it,
including rows written in single-tenant mode, in multi-tenant mode and by a tenant that
signed up after M4. Each command run twice does nothing the second time, dry runs change
nothing, and the legacy copy cannot be dropped before M4 + 14 days.
"""
from __future__ import annotations

import re
import uuid
from datetime import timedelta
from io import StringIO

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from django.db import DatabaseError, connection, transaction
from django.utils import timezone

from compliance.models import AuditEvent
from tenants import blueprint, hotcache, legacy, migration_plan
from tenants.models import TenancyMigrationStep, Tenant
from tests.conftest import client_for, unique_slug

pytestmark = pytest.mark.django_db(transaction=True)

LEGACY, TARGET = "levqor_legacy", "t_levqor_main"


def _drop_layouts():
    with connection.cursor() as cursor:
        for schema in (LEGACY, TARGET):
            cursor.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
        for table in reversed(migration_plan.product_tables()):
            cursor.execute(f'DROP TABLE IF EXISTS public."{table.name}" CASCADE')
    hotcache.cache.clear()


@pytest.fixture
def single_tenant_db(settings):
    """A pre-tenancy database: the product tables in `public` with one organization's rows."""
    settings.LEVQOR_SIGNUP_RATE = "100000/hour"
    settings.LEVQOR_LEGACY_SCHEMA = LEGACY
    _drop_layouts()
    assert not Tenant.objects.exists(), "the test database must start with no tenants"
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute("SET LOCAL search_path = public")
        for statement in blueprint.schema_ddl():
            if "django_migrations" not in statement:
                cursor.execute(statement)
        seeded = _seed(cursor)
    yield seeded
    _drop_layouts()


def _seed(cursor) -> dict:
    workflows = {str(uuid.uuid4()): f"legacy workflow {i}" for i in range(3)}
    for wid, name in workflows.items():
        cursor.execute("INSERT INTO workflows_workflow (id, name, description, definition, enabled, created_by, "
                       "created_at, updated_at) VALUES (%s, %s, '', %s, true, 'user:legacy@example.com', now(), now())",
                       [wid, name, '{"steps": [{"type": "log"}]}'])
    first = next(iter(workflows))
    for _ in range(2):
        cursor.execute("INSERT INTO workflows_workflowrun (id, workflow_id, status, triggered_by, input, result, "
                       "created_at, finished_at) VALUES (%s, %s, 'succeeded', 'user:legacy@example.com', '{}', "
                       "'{\"steps_run\": 1}', now(), now())", [str(uuid.uuid4()), first])
    for name in ("Hello, Levqor", "Nightly report"):
        cursor.execute("INSERT INTO workflows_workflowtemplate (id, pack, name, definition, created_at) "
                       "VALUES (%s, 'starter', %s, '{}', now())", [str(uuid.uuid4()), name])
    return {"workflows": workflows, "runs_of_first": 2, "first": first}


def run(command: str, *args) -> str:
    out = StringIO()
    call_command(command, *args, stdout=out)
    hotcache.cache.clear()  # this process is every web node here: it learns of the change at once
    return out.getvalue()


def snapshot() -> dict:
    """Everything a dry run or a second run must leave alone."""
    org = Tenant.objects.filter(slug=legacy.ORG_SLUG).values("schema_name").first()
    schemas = {s: migration_plan.fingerprints(s) if migration_plan._layout(s) == "complete" else None
               for s in ("public", LEGACY, TARGET)}
    steps = list(TenancyMigrationStep.objects.order_by("step").values_list("step", "done_at", "updated_at"))
    return {"org": org, "schemas": schemas, "steps": steps, "audit": AuditEvent.dangerously_all_tenants.count(),
            "tenants": Tenant.objects.count(), "frozen": [migration_plan.is_frozen(s) for s in (LEGACY, TARGET)]}


def served(client, **headers) -> dict:
    """The organization's workflows as its API serves them: {id: name}."""
    response = client.get("/api/workflows?limit=200", **headers)
    assert response.status_code == 200, response.content
    return {w["id"]: w["name"] for w in response.json()["results"]}


def create(client, name: str, **headers) -> str:
    response = client.post("/api/workflows", {"name": name, "definition": {"steps": [{"type": "log"}]}},
                           format="json", **headers)
    assert response.status_code == 201, response.content
    return response.json()["id"]


def twice_is_noop(command: str, *args) -> None:
    before = snapshot()
    out = run(command, *args)
    assert "nothing to do" in out, out
    assert snapshot() == before


def dry_run_changes_nothing(command: str) -> str:
    before = snapshot()
    out = run(command, "--dry-run")
    assert "dry run" in out and "would" in out, out
    assert snapshot() == before
    return out


def test_single_tenant_to_multi_tenant_and_back_and_forward_again(single_tenant_db, settings):
    expected = dict(single_tenant_db["workflows"])
    pre_tenancy = migration_plan.fingerprints("public")
    settings.TENANCY_ENABLED = False

    # Before M1 the single-tenant mode has no organization to serve: a clear 503, no 500.
    response = client_for().get("/api/workflows")
    assert response.status_code == 503 and response.json()["error"]["code"] == "single_tenant_not_set_up"

    # M1: shared tables verified, the product tables moved out of public, the organization registered.
    dry_run_changes_nothing("tenancy_m1")
    out = run("tenancy_m1")
    owner_key = re.search(r"shown once\): (\S+)", out).group(1)
    org = Tenant.objects.get(slug=legacy.ORG_SLUG)
    assert org.schema_name == LEGACY
    assert migration_plan.fingerprints(LEGACY) == pre_tenancy
    assert migration_plan._layout("public") == "none"
    twice_is_noop("tenancy_m1")

    # Single-tenant mode: no tenant header needed, and none honoured; signups closed.
    owner = client_for(owner_key)
    assert served(owner) == expected
    assert served(owner, HTTP_X_TENANT_ID="someone-else") == expected
    expected[create(owner, "written single-tenant after M1")] = "written single-tenant after M1"
    assert served(owner) == expected
    signup = client_for().post("/api/tenants", {"name": "New", "slug": unique_slug("new"), "plan": "core",
                                                "admin_email": "a@new.test"}, format="json")
    assert signup.status_code == 403 and signup.json()["error"]["code"] == "signups_closed"

    # Multi-tenant mode during the migration: the organization by name, or by default.
    settings.TENANCY_ENABLED = True
    hotcache.cache.clear()
    assert served(owner, HTTP_X_TENANT_ID=legacy.ORG_SLUG) == expected
    assert served(owner) == expected
    assert client_for().post("/api/tenants", {"name": "New", "slug": unique_slug("new"), "plan": "core",
                                              "admin_email": "a@new.test"}, format="json").status_code == 403
    settings.TENANCY_ENABLED = False
    hotcache.cache.clear()

    # M2: the copy, verified; the legacy layout still takes the writes.
    dry_run_changes_nothing("tenancy_m2")
    assert migration_plan._layout(TARGET) == "none"
    out = run("tenancy_m2")
    assert f"copying {LEGACY} -> {TARGET}" in out and "3/3" in out  # the progress bar, one tick per table
    assert migration_plan.fingerprints(TARGET) == migration_plan.fingerprints(LEGACY)
    assert Tenant.objects.get(slug=legacy.ORG_SLUG).schema_name == LEGACY
    twice_is_noop("tenancy_m2")
    expected[create(owner, "written single-tenant after M2")] = "written single-tenant after M2"
    assert migration_plan.fingerprints(TARGET) != migration_plan.fingerprints(LEGACY)  # M3 must carry it over

    # M3: final copy, read paths, audit backfill, writes switched; the legacy copy frozen.
    dry_run_changes_nothing("tenancy_m3")
    audit_before = AuditEvent.dangerously_all_tenants.filter(tenant_id=org.pk, event="tenancy.legacy_imported").count()
    run("tenancy_m3")
    assert Tenant.objects.get(slug=legacy.ORG_SLUG).schema_name == TARGET
    assert migration_plan.fingerprints(TARGET) == migration_plan.fingerprints(LEGACY)
    imported = AuditEvent.dangerously_all_tenants.filter(tenant_id=org.pk, event="tenancy.legacy_imported")
    assert imported.count() - audit_before == len(migration_plan.product_tables())
    assert {e.metadata_json["table"]: e.metadata_json["rows"] for e in imported}["workflows_workflow"] == len(expected)
    twice_is_noop("tenancy_m3")
    with pytest.raises(DatabaseError, match="read-only"), transaction.atomic(), connection.cursor() as cursor:
        cursor.execute(f'DELETE FROM "{LEGACY}".workflows_workflow')
    assert served(owner) == expected  # still single-tenant mode, now served from the tenant schema
    expected[create(owner, "written single-tenant after M3")] = "written single-tenant after M3"

    # M4 needs multi-tenant mode; then signups open and the header-less path closes.
    with pytest.raises(CommandError, match="TENANCY_ENABLED"):
        run("tenancy_m4")
    settings.TENANCY_ENABLED = True
    hotcache.cache.clear()
    dry_run_changes_nothing("tenancy_m4")
    run("tenancy_m4")
    twice_is_noop("tenancy_m4")
    headerless = owner.get("/api/workflows")
    assert headerless.status_code == 400 and headerless.json()["error"]["code"] == "tenant_required"
    org_headers = {"HTTP_X_TENANT_ID": legacy.ORG_SLUG}
    assert served(owner, **org_headers) == expected
    wid = create(owner, "written multi-tenant", **org_headers)
    expected[wid] = "written multi-tenant"
    assert owner.post(f"/api/workflows/{wid}/run", {}, format="json", **org_headers).status_code == 201
    slug = unique_slug("new")
    signup = client_for().post("/api/tenants", {"name": "New Co", "slug": slug, "plan": "core",
                                                "admin_email": f"a@{slug}.test"}, format="json")
    assert signup.status_code == 201, signup.content
    newcomer = client_for(signup.json()["api_key"], tenant=slug)
    newcomer_wid = create(newcomer, "the newcomer's own")
    assert served(newcomer) == {newcomer_wid: "the newcomer's own"}
    assert served(owner, **org_headers) == expected  # nothing of the newcomer's

    # The legacy copy cannot be dropped before M4 + 14 days, even at 13.
    with pytest.raises(CommandError, match="refusing to drop"):
        run("tenancy_drop_legacy")
    TenancyMigrationStep.objects.filter(step="m4").update(done_at=timezone.now() - timedelta(days=13))
    with pytest.raises(CommandError, match="refusing to drop"):
        run("tenancy_drop_legacy", "--dry-run")
    assert migration_plan._layout(LEGACY) == "complete"

    # Rollback: everything written in multi-tenant mode comes back to the legacy layout.
    dry_run_changes_nothing("tenancy_rollback")
    run("tenancy_rollback")
    assert Tenant.objects.get(slug=legacy.ORG_SLUG).schema_name == LEGACY
    assert migration_plan.fingerprints(LEGACY) == migration_plan.fingerprints(TARGET)
    twice_is_noop("tenancy_rollback")
    settings.TENANCY_ENABLED = False
    hotcache.cache.clear()
    assert served(owner) == expected
    with connection.cursor() as cursor:
        cursor.execute(f'SELECT count(*) FROM "{LEGACY}".workflows_workflowrun WHERE workflow_id = %s', [wid])
        assert cursor.fetchone()[0] == 1  # the run made in multi-tenant mode came back too
    expected[create(owner, "written single-tenant after rollback")] = "written single-tenant after rollback"
    with pytest.raises(CommandError, match="M4 has not run"):
        run("tenancy_drop_legacy")
    settings.TENANCY_ENABLED = True
    hotcache.cache.clear()
    assert served(newcomer) == {newcomer_wid: "the newcomer's own"}  # other tenants are untouched
    assert client_for().post("/api/tenants", {"name": "Later", "slug": unique_slug("new"), "plan": "core",
                                              "admin_email": "b@later.test"}, format="json").status_code == 403

    # Forward again: M2, M3, M4 carry the rows written since.
    for command in ("tenancy_m2", "tenancy_m3", "tenancy_m4"):
        run(command)
        twice_is_noop(command)
    assert Tenant.objects.get(slug=legacy.ORG_SLUG).schema_name == TARGET
    assert migration_plan.fingerprints(TARGET) == migration_plan.fingerprints(LEGACY)
    assert served(owner, **org_headers) == expected
    assert served(newcomer) == {newcomer_wid: "the newcomer's own"}

    # Past M4 + 14 days the legacy copy may go; after that there is no way back.
    with pytest.raises(CommandError, match="refusing to drop"):
        run("tenancy_drop_legacy")
    TenancyMigrationStep.objects.filter(step="m4").update(done_at=timezone.now() - timedelta(days=14, minutes=1))
    dry_run_changes_nothing("tenancy_drop_legacy")
    run("tenancy_drop_legacy")
    assert migration_plan._layout(LEGACY) == "none" and not blueprint.schema_exists(LEGACY)
    twice_is_noop("tenancy_drop_legacy")
    with pytest.raises(CommandError, match="dropped"):
        run("tenancy_rollback")
    assert served(owner, **org_headers) == expected
    status = StringIO()
    call_command("tenancy_status", stdout=status)
    assert "organization_schema: t_levqor_main" in status.getvalue()


def test_m1_refuses_a_database_that_is_already_multi_tenant(make_tenant, settings):
    settings.LEVQOR_LEGACY_SCHEMA = LEGACY
    make_tenant()
    try:
        with pytest.raises(CommandError, match="already serves 1 tenants"):
            run("tenancy_m1")
        assert not blueprint.schema_exists(LEGACY)
        assert not Tenant.objects.filter(slug=legacy.ORG_SLUG).exists()
    finally:
        _drop_layouts()


def test_steps_refuse_out_of_order(single_tenant_db):
    for command, missing in (("tenancy_m2", "M1"), ("tenancy_m3", "M2"), ("tenancy_m4", "M3"),
                             ("tenancy_rollback", "M1"), ("tenancy_drop_legacy", "M4")):
        with pytest.raises(CommandError, match=missing):
            run(command)
    run("tenancy_m1")
    with pytest.raises(CommandError, match="M2 has not run"):
        run("tenancy_m3")


def test_born_multi_tenant_deployment_is_unchanged(make_tenant, settings):
    """No migration recorded: tenant routes still need a tenant, signups stay open."""
    _, key = make_tenant()
    response = client_for(key).get("/api/workflows")
    assert response.status_code == 400 and response.json()["error"]["code"] == "tenant_required"
    assert legacy.signups_open()
