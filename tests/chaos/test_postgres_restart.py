"""Chaos drill: PostgreSQL restarts (cleanly, and by crashing) under API traffic.

The shared server on 127.0.0.1:5432 is never touched: a private cluster on a free port
holds the database of an enterprise (database-per-tenant) tenant, and is restarted while
a client writes to it. What the user sees: 503 `database_unavailable` (never a 500) while
it is down, success from the first request after it is back, and every write that was
acknowledged with a 2xx is there afterwards.
"""
from __future__ import annotations

import time

import pytest

from tests.chaos.servers import PgServer
from tests.conftest import client_for
from tests.runtime.drill import Writer, point_region, provision_tenants

pytestmark = pytest.mark.django_db(transaction=True)
REGION = "chaos-pg"


@pytest.fixture
def pg_server():
    server = PgServer().start()
    yield server
    server.close()


class Recorder(Writer):
    """The DR drill's writer, also keeping each answer's start time and status."""

    def __init__(self, tenants):
        super().__init__(tenants)
        self.answers: list[tuple[float, float, int]] = []  # (started, answered, status)

    def run(self) -> None:
        from django.db import connections

        from tenants import broker

        tenant, key = self.tenants[0]
        client = client_for(key, tenant)
        client.raise_request_exception = False
        index = 0
        try:
            while not self.stopping.is_set():
                started = time.monotonic()
                response = client.post("/api/workflows", {"name": f"pg-{index}"}, format="json")
                self.answers.append((started, time.monotonic(), response.status_code))
                if response.status_code == 201:
                    self.acked.append(response.json()["name"])
                else:
                    self.last_error = response.content.decode()[:300]
                    time.sleep(0.02)
                index += 1
        finally:
            broker.close_thread_connections(only_obsolete=False)
            connections.close_all()

    def count_after(self, mark: float) -> int:
        return sum(1 for started, _, status in list(self.answers) if started > mark and status == 201)

    def wait_until(self, predicate, timeout: float = 30) -> None:
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if predicate():
                return
            time.sleep(0.01)
        raise TimeoutError(f"the writer did not get there (last error: {self.last_error})")


@pytest.mark.parametrize("mode", ["fast", "immediate"])
def test_a_postgres_restart_mid_traffic_loses_no_acknowledged_write(settings, pg_server, mode):
    from tenants import broker

    point_region(settings, REGION, pg_server.port, pg_server.port)
    [(tenant, key)] = provision_tenants(1, region=REGION, prefix="pgr")
    writer = Recorder([(tenant, key)])
    writer.start()
    try:
        writer.wait_until(lambda: len(writer.acked) >= 20)
        pg_server.stop(mode)  # `immediate`: a crash, recovered from the WAL on start
        down = time.monotonic()
        writer.wait_until(lambda: any(s > down and status != 201 for s, _, status in writer.answers))
        time.sleep(0.5)
        pg_server.start()
        up = time.monotonic()
        writer.wait_until(lambda: writer.count_after(up) >= 20)
    finally:
        writer.stop()

    refused = [status for started, _, status in writer.answers if started > down and status != 201]
    assert refused and set(refused) == {503}, set(refused)  # database_unavailable, never a 500
    after = [status for started, _, status in writer.answers if started > up]
    assert after[:20] == [201] * 20  # the first request after the restart already succeeds
    conn = pg_server.cursor(broker.tenant_database_name(tenant.id))
    with conn.cursor() as cursor:
        cursor.execute("SELECT name FROM workflows_workflow")
        stored = {row[0] for row in cursor.fetchall()}
    conn.close()
    assert set(writer.acked) <= stored  # no acknowledged write lost
    broker.forget(broker.alias_name(tenant.id))


@pytest.mark.parametrize("health_checks", [True, False])
def test_a_persistent_platform_connection_survives_a_restart_with_health_checks(settings, pg_server, health_checks):
    """The platform connection is kept between requests (CONN_MAX_AGE). With Levqor's
    CONN_HEALTH_CHECKS the first request after a restart reconnects; without it (the
    control) that request fails."""
    from django.db import OperationalError
    from django.db.utils import ConnectionHandler

    assert settings.DATABASES["default"]["CONN_HEALTH_CHECKS"] is True  # what Levqor ships
    config = {**settings.DATABASES["default"], "ENGINE": "django.db.backends.postgresql", "HOST": "127.0.0.1",
              "PORT": pg_server.port, "NAME": "postgres", "CONN_HEALTH_CHECKS": health_checks}
    config.pop("SCHEMA", None)
    conn = ConnectionHandler({"default": config})["default"]

    def request() -> int:
        conn.close_if_unusable_or_obsolete()  # request_started
        try:
            with conn.cursor() as cursor:
                cursor.execute("SELECT 1")
                return cursor.fetchone()[0]
        finally:
            conn.close_if_unusable_or_obsolete()  # request_finished

    assert request() == 1
    pg_server.stop("fast")
    pg_server.start()
    try:
        if health_checks:
            assert request() == 1
        else:
            with pytest.raises(OperationalError):
                request()
            assert request() == 1  # Django closed the broken connection after the failure
    finally:
        conn.close()
