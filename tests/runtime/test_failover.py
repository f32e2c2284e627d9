"""Region failover (runtime/dr.py) against real PostgreSQL: each test that fails over
starts its own primary with a streaming replica (tests/runtime/drill.py) and region
"drill" pointing at them; everything is stopped and removed even when a test fails.
The replica is synchronous except in the asynchronous drill, where it streams over a
link that delays WAL by a second, so the failure loses what was in flight."""
from io import StringIO

import pytest
from django.contrib.auth import get_user_model
from django.core.management import CommandError, call_command
from django.db import connections

from compliance.models import Alert, AuditEvent
from levqor.regions import Region
from runtime import dr
from runtime.models import Failover, RegionState
from tenants import broker, secrets
from tests.conftest import client_for
from tests.ports import free_port
from tests.runtime.drill import PgPair, point_region, provision_tenants, run_drill, server_url

REGION = "drill"
ASYNC_LINK_DELAY = 1.0  # seconds: lag enough to lose writes, well inside the 5 s RPO target


def _forget_health_state() -> None:
    from levqor.redis import client

    for key in client().scan_iter(f"levqor:dr:{REGION}:*"):
        client().delete(key)


@pytest.fixture
def pair(settings, transactional_db):
    """A running primary + synchronous replica, and region "drill" on them."""
    yield from _running_pair(settings, PgPair())


@pytest.fixture
def async_pair(settings, transactional_db):
    """A running primary + asynchronous replica behind a 1 s link, and region "drill" on them."""
    yield from _running_pair(settings, PgPair(sync=False, link_delay=ASYNC_LINK_DELAY))


def _running_pair(settings, servers: PgPair):
    try:
        servers.start()
        point_region(settings, REGION, servers.primary_port, servers.replica_port)
        _forget_health_state()
        yield servers
    finally:
        _forget_health_state()
        servers.close()


def _member(tenant, role: str) -> str:
    from tenants.models import TenantUser

    email = f"{role}@{tenant.slug}.test"
    user = get_user_model().objects.create_user(username=email, email=email, password="x-long-pass-1")
    TenantUser.dangerously_all_tenants.create(tenant=tenant, user=user, role=role)
    return email


def test_drill_loses_no_acknowledged_write_and_meets_rpo_and_rto(pair, mailoutbox):
    tenants = provision_tenants(2, region=REGION)
    first = tenants[0][0]
    admin, viewer = _member(first, "admin"), _member(first, "viewer")

    result = run_drill(pair, tenants, region=REGION)

    assert result["lost"] == 0 and result["writes_found"] == result["writes_acked"], result
    assert result["writes_acked_before_stop"] >= 100, result
    assert result["every_tenant_answered"], result
    assert result["rpo_seconds"] is not None and result["rpo_seconds"] <= 5, result
    assert result["rpo_bytes"] is not None, result
    assert result["replica_behind_at_stop_seconds"] <= 5, result
    assert result["rto_seconds"] <= 60, result

    record = Failover.objects.get()
    assert (record.status, record.trigger, record.region) == ("done", "manual", REGION)
    assert record.rto_seconds is not None and record.detail_json["promoted_now"] is True
    assert record.detail_json["to"] == f"127.0.0.1:{pair.replica_port}"
    assert record.detail_json["tenants"] == [t.id for t, _ in tenants]
    assert not pair.in_recovery(pair.replica_port)
    state = RegionState.objects.get(region=REGION)
    assert "127.0.0.1" not in state.database_url_encrypted
    assert secrets.decrypt(state.database_url_encrypted) == server_url(pair.replica_port)
    for tenant, _ in tenants:
        event = AuditEvent.dangerously_all_tenants.get(tenant_id=tenant.id, event="dr.failover")
        assert event.metadata_json["failover_id"] == record.id
    alert = Alert.objects.get(kind="dr.failover")
    assert alert.audience == "staff" and alert.metadata_json["tenants"] == 2
    assert not Alert.objects.filter(kind="dr.failover_failed").exists()
    recipients = sorted(sorted(message.to) for message in mailoutbox)
    assert recipients == sorted([sorted([f"owner@{first.slug}.test", admin]), [f"owner@{tenants[1][0].slug}.test"]])
    assert viewer not in str(recipients)

    # Provisioning follows the region map too: a new tenant's database is made on the promoted server.
    (late, key), = provision_tenants(1, region=REGION)
    with pair.cursor(pair.replica_port) as cursor:
        cursor.execute("SELECT 1 FROM pg_database WHERE datname = %s", [broker.tenant_database_name(late.id)])
        assert cursor.fetchone()
    assert client_for(key, late).post("/api/workflows", {"name": "after"}, format="json").status_code == 201


def test_async_drill_loses_only_writes_inside_the_measured_lag_window(async_pair):
    tenants = provision_tenants(2, region=REGION)

    # Writing for ~3 link delays: the replica has the older writes, not the newest ones.
    result = run_drill(async_pair, tenants, region=REGION, warmup_writes=300)

    # The replica really was behind: the health check's sample (the Failover row's RPO) and
    # the lag measured at the failure both see the link's delay, and both are within target.
    assert 0.5 <= result["rpo_seconds"] <= 5 and result["rpo_bytes"] > 0, result
    assert 0.5 <= result["lag_at_failure_seconds"] <= 5, result
    assert result["lag_at_failure_bytes"] > 0, result
    # Asynchronous replication lost acknowledged writes, and only ones inside the lag
    # window: acknowledged after the replica's newest replayed commit, before the stop.
    assert result["lost"] > 0 and result["lost_in_lag_window"] == result["lost"], result
    assert result["oldest_lost_acked_before_stop_seconds"] <= 5, result
    assert result["lost"] < result["writes_acked_before_stop"], result  # the older writes made it
    assert result["every_tenant_answered"] and result["rto_seconds"] <= 60, result
    record = Failover.objects.get()
    assert record.status == "done" and record.detail_json["promoted_now"] is True
    assert record.detail_json["synchronous_replication_turned_off"] is False
    assert not async_pair.in_recovery(async_pair.replica_port)


def test_health_check_fails_over_at_the_nth_consecutive_failure_only(pair, settings):
    settings.LEVQOR_FAILOVER_AFTER_FAILURES = 3
    assert dr.check_region_health()[REGION] == "ok"
    pair.stop_primary()
    assert [dr.check_region_health()[REGION] for _ in range(2)] == ["failing 1/3", "failing 2/3"]
    pair.start_primary()  # a success in between: failures must be consecutive
    assert dr.check_region_health()[REGION] == "ok"
    pair.stop_primary()
    assert [dr.check_region_health()[REGION] for _ in range(2)] == ["failing 1/3", "failing 2/3"]
    assert not Failover.objects.exists() and pair.in_recovery(pair.replica_port)

    assert dr.check_region_health()[REGION].startswith("failed over")

    record = Failover.objects.get()
    assert (record.status, record.trigger, record.actor) == ("done", "health_check", "system:health-check")
    assert not pair.in_recovery(pair.replica_port)
    assert Alert.objects.filter(kind="dr.failover").count() == 1
    # The promoted server is the region's primary now: healthy, and no second failover.
    assert [dr.check_region_health()[REGION] for _ in range(4)] == ["ok"] * 4
    assert Failover.objects.count() == 1


def test_failover_command_refuses_a_live_primary_and_a_second_failover(pair):
    with pytest.raises(CommandError, match="still answers"):
        call_command("failover", "--region", REGION)
    pair.stop_primary()
    out = StringIO()
    call_command("failover", "--region", REGION, "--dry-run", stdout=out)
    assert "nothing changed" in out.getvalue() and '"in_recovery": true' in out.getvalue()
    assert not Failover.objects.exists() and pair.in_recovery(pair.replica_port)

    call_command("failover", "--region", REGION, stdout=out)
    assert f"failed over from 127.0.0.1:{pair.primary_port} to 127.0.0.1:{pair.replica_port}" in out.getvalue()

    with pytest.raises(CommandError, match="already failed over"):
        call_command("failover", "--region", REGION)
    with pytest.raises(dr.FailoverRefused, match="already failed over"):
        dr.failover(REGION, force=True)
    assert Failover.objects.count() == 1 and Alert.objects.filter(kind="dr.failover").count() == 1


@pytest.mark.django_db(transaction=True)
def test_a_failover_that_cannot_reach_the_replica_fails_loudly_and_changes_nothing(settings):
    point_region(settings, REGION, free_port(), free_port())  # nothing listens on either

    with pytest.raises(dr.FailoverFailed, match="failed"):
        dr.failover(REGION, actor="test")

    record = Failover.objects.get()
    assert record.status == "failed" and "error" in record.detail_json
    alert = Alert.objects.get(kind="dr.failover_failed")
    assert alert.audience == "staff" and alert.metadata_json["failover_id"] == record.id
    assert not RegionState.objects.exists() and not Alert.objects.filter(kind="dr.failover").exists()


@pytest.mark.django_db
def test_a_region_on_the_platform_database_server_is_refused(settings):
    settings.LEVQOR_REGIONS = {**settings.LEVQOR_REGIONS, REGION: Region(
        name=REGION, database=dict(settings.DATABASES["default"]), replica_url=server_url(free_port()), storage="")}

    with pytest.raises(dr.FailoverRefused, match="platform database") as refused:
        dr.failover(REGION, actor="test")
    assert refused.value.code == "platform_server" and not Failover.objects.exists()


@pytest.mark.django_db
def test_tenant_aliases_follow_the_region_map_while_settings_name_the_promoted_replica(settings):
    primary, replica = free_port(), free_port()
    point_region(settings, REGION, primary, replica)
    alias = broker.alias_name(10**12)
    broker.register(alias, f"postgres://owner:pw@127.0.0.1:{primary}/tenant_db", region=REGION)
    try:
        broker.ensure_connection_object(alias)
        before = connections[alias]
        assert (before.settings_dict["PORT"], before.settings_dict["NAME"]) == (str(primary), "tenant_db")

        RegionState.objects.create(region=REGION, database_url_encrypted=secrets.encrypt(server_url(replica)))
        broker.refresh_region_map()  # what the failing-over process does; others wait LEVQOR_REGION_MAP_SECONDS

        after = connections[alias]
        assert after is not before
        assert (after.settings_dict["PORT"], after.settings_dict["NAME"], after.settings_dict["USER"]) == (
            str(replica), "tenant_db", "owner")
        # Once LEVQOR_REGIONS carries the new topology, the row has nothing left to say.
        moved = free_port()
        point_region(settings, REGION, moved, free_port())
        assert broker.server_config(REGION)["PORT"] == moved
    finally:
        broker.forget(alias)
