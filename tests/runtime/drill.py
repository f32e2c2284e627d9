"""The DR drill, shared by tests/runtime/test_failover.py and bench/failover.py.

A real PostgreSQL primary with a streaming replica on free ports; writes through the
tenant API; the primary killed (`pg_ctl stop -m immediate`); the region failed over; then
what was measured and whether every acknowledged write is on the promoted server.

initdb and postgres refuse to run as root: as root they run as the `postgres` OS user,
in a temporary directory (outside pytest's 0700 tree) that user owns.
"""
from __future__ import annotations

import glob
import os
import shutil
import subprocess
import tempfile
import threading
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import psycopg2

from tests.ports import free_port

# Replication is synchronous so that an acknowledged commit is on the replica's disk: the
# drill can then require that no acknowledged write is lost, which checks the failover
# (promotion complete, every tenant pointed at the promoted server), not PostgreSQL's
# asynchronous race. fsync is off: the drill kills processes, not the machine, and the
# operating system keeps what they wrote.
PRIMARY_CONF = """
listen_addresses = '127.0.0.1'
port = {port}
unix_socket_directories = ''
wal_level = replica
max_wal_senders = 5
synchronous_standby_names = '*'
fsync = off
"""


def pg_bin(name: str) -> str:
    """A PostgreSQL server binary: Debian's newest /usr/lib/postgresql/<v>/bin, else PATH."""
    found = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"), key=lambda p: int(Path(p).parts[-3]))
    path = found[-1] if found else shutil.which(name)
    if not path:
        raise RuntimeError(f"PostgreSQL's {name} is required for the DR drill (Debian: postgresql-15)")
    return path


class PgPair:
    """A primary and its streaming replica; `close()` stops both and removes every file."""

    def __init__(self):
        self.folder = Path(tempfile.mkdtemp(prefix="levqor-dr-"))
        if os.geteuid() == 0:
            shutil.chown(self.folder, "postgres")
        self.primary_port = free_port()
        self.replica_port = free_port()
        while self.replica_port == self.primary_port:
            self.replica_port = free_port()
        self.primary_dir, self.replica_dir = self.folder / "primary", self.folder / "replica"

    def _run(self, name: str, *args: str) -> None:
        as_postgres = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
        done = subprocess.run([*as_postgres, pg_bin(name), *args], capture_output=True, text=True, timeout=60)
        if done.returncode != 0:
            raise RuntimeError(f"{name} failed: {(done.stderr or done.stdout)[-1500:]}")

    def start(self) -> "PgPair":
        self._run("initdb", "-D", str(self.primary_dir), "-U", "postgres", "-A", "trust", "-E", "UTF8",
                  "--locale=C", "--no-sync")
        with open(self.primary_dir / "postgresql.conf", "a") as conf:
            conf.write(PRIMARY_CONF.format(port=self.primary_port))
        self.start_primary()
        self._run("pg_basebackup", "-h", "127.0.0.1", "-p", str(self.primary_port), "-U", "postgres",
                  "-D", str(self.replica_dir), "-R", "-X", "stream", "-c", "fast", "--no-sync")
        with open(self.replica_dir / "postgresql.conf", "a") as conf:
            conf.write(f"port = {self.replica_port}\n")
        self._run("pg_ctl", "-D", str(self.replica_dir), "-l", str(self.folder / "replica.log"), "-w", "start")
        self._wait_for_streaming()
        return self

    def start_primary(self) -> None:
        self._run("pg_ctl", "-D", str(self.primary_dir), "-l", str(self.folder / "primary.log"), "-w", "start")

    def stop_primary(self) -> None:
        """Kill it: no checkpoint, no goodbye to the replica (what a crashed host looks like)."""
        self._run("pg_ctl", "-D", str(self.primary_dir), "-m", "immediate", "-w", "stop")

    def _wait_for_streaming(self, timeout: float = 15) -> None:
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            with self.cursor(self.primary_port) as cursor:
                cursor.execute("SELECT count(*) FROM pg_stat_replication WHERE state = 'streaming'")
                if cursor.fetchone()[0]:
                    return
            time.sleep(0.05)
        raise RuntimeError("the replica did not start streaming")

    def cursor(self, port: int, dbname: str = "postgres"):
        return _Cursor(port, dbname)

    def in_recovery(self, port: int) -> bool:
        with self.cursor(port) as cursor:
            cursor.execute("SELECT pg_is_in_recovery()")
            return cursor.fetchone()[0]

    def close(self) -> None:
        for data in (self.replica_dir, self.primary_dir):
            if (data / "postmaster.pid").exists():
                try:
                    self._run("pg_ctl", "-D", str(data), "-m", "immediate", "-w", "stop")
                except RuntimeError:
                    pass  # already stopped
        shutil.rmtree(self.folder, ignore_errors=True)


def server_url(port: int) -> str:
    return f"postgres://postgres@127.0.0.1:{port}/postgres"


def point_region(settings, name: str, primary_port: int, replica_port: int) -> None:
    """Add (or replace) region `name` in settings.LEVQOR_REGIONS: a primary and its replica
    on 127.0.0.1 (servers that need not be running)."""
    import dj_database_url

    from levqor.regions import Region

    settings.LEVQOR_REGIONS = {**settings.LEVQOR_REGIONS, name: Region(
        name=name, database=dj_database_url.parse(server_url(primary_port)), replica_url=server_url(replica_port),
        storage="/nonexistent")}


def provision_tenants(count: int, *, region: str, prefix: str = "dr") -> list:
    """Enterprise (database-per-tenant) tenants in `region`, after building its template
    database: [(tenant, owner API key)]."""
    from tenants import blueprint, services
    from tests.conftest import unique_slug

    blueprint.migrate_template_database(region=region)
    made = []
    for _ in range(count):
        slug = unique_slug(prefix)
        result = services.tenant_create(name=slug.title(), slug=slug, plan="enterprise", region=region,
                                        admin_email=f"owner@{slug}.test", actor="test")
        made.append((result.tenant, result.api_key))
    return made


class _Cursor:
    def __init__(self, port: int, dbname: str):
        self.conn = psycopg2.connect(host="127.0.0.1", port=port, user="postgres", dbname=dbname, connect_timeout=3)
        self.conn.autocommit = True

    def __enter__(self):
        self.cursor = self.conn.cursor()
        return self.cursor

    def __exit__(self, *exc):
        self.conn.close()


@dataclass
class Ack:
    tenant_id: int
    name: str
    at: float  # time.monotonic() when the 2xx came back


class Writer(threading.Thread):
    """Creates workflows through the tenant API, round robin over the tenants, as fast as
    it can, and records each one acknowledged with a 2xx."""

    def __init__(self, tenants: list):
        super().__init__(daemon=True)
        self.tenants = tenants  # [(tenant, api_key)]
        self.acked: list[Ack] = []
        self.failed = 0
        self.last_error = ""
        self.stopping = threading.Event()

    def run(self) -> None:
        from django.db import connections

        from tenants import broker
        from tests.conftest import client_for

        clients = []
        for tenant, key in self.tenants:
            client = client_for(key, tenant)
            client.raise_request_exception = False  # a dead server is a 500 to count, not a crash
            clients.append((tenant, client))
        try:
            index = 0
            while not self.stopping.is_set():
                tenant, client = clients[index % len(clients)]
                name = f"drill-{index}"
                try:
                    status = client.post("/api/workflows", {"name": name}, format="json").status_code
                except Exception as exc:  # raised past the handler (a signal receiver): a failed write
                    status, self.last_error = 0, f"{type(exc).__name__}: {exc}"
                if 200 <= status < 300:
                    self.acked.append(Ack(tenant.id, name, time.monotonic()))
                else:
                    self.failed += 1
                    time.sleep(0.01)  # no busy loop against a dead server
                index += 1
        finally:
            broker.close_thread_connections(only_obsolete=False)
            connections.close_all()

    def wait_for_acks(self, count: int, *, after: float = 0.0, per_tenant: bool = False, timeout: float = 60) -> bool:
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            recent = [a for a in list(self.acked) if a.at > after]
            if per_tenant:
                if all(sum(a.tenant_id == t.id for a in recent) >= count for t, _ in self.tenants):
                    return True
            elif len(recent) >= count:
                return True
            time.sleep(0.005)
        return False

    def stop(self) -> None:
        self.stopping.set()
        self.join(timeout=30)


def run_drill(pair: PgPair, tenants: list, *, region: str, warmup_writes: int = 100) -> dict:
    """Write, kill the primary, fail over, keep writing until every tenant has had 10
    writes acknowledged again; then look for every acknowledged write on the promoted server."""
    from runtime import dr
    from tenants import broker

    writer = Writer(tenants)
    writer.start()
    try:
        if not writer.wait_for_acks(warmup_writes, timeout=30):
            raise RuntimeError(f"the writer got {len(writer.acked)} writes through before the drill, wanted "
                               f"{warmup_writes} (last error: {writer.last_error or 'none'})")
        dr.check_region_health()  # beat's last probe before the failure: the lag sample the RPO comes from
        pair.stop_primary()
        # From here on the old primary is gone: any 2xx comes from the promoted server.
        stopped, stopped_at = time.monotonic(), datetime.now(timezone.utc)
        record = dr.failover(region, trigger="manual", actor="staff:drill", reason="DR drill")
        failed_over = time.monotonic()
        answered = writer.wait_for_acks(10, after=stopped, per_tenant=True, timeout=60)
        first_ack = min((a.at for a in writer.acked if a.at > stopped), default=None)
    finally:
        writer.stop()
    found = 0
    for tenant, _ in tenants:
        with pair.cursor(pair.replica_port, broker.tenant_database_name(tenant.id)) as cursor:
            cursor.execute("SELECT name FROM workflows_workflow")
            names = {row[0] for row in cursor.fetchall()}
        found += sum(a.name in names for a in writer.acked if a.tenant_id == tenant.id)
    last_commit = record.detail_json.get("last_replayed_commit_at")
    return {
        "rpo_seconds": record.rpo_seconds,
        "rpo_bytes": record.replica_lag_bytes,
        # How old the replica's newest commit (pg_last_xact_replay_timestamp) was once the
        # primary was confirmed dead: with writes never pausing, an upper bound of the lag.
        "replica_behind_at_stop_seconds": round(max(0.0, (stopped_at - datetime.fromisoformat(last_commit))
                                                    .total_seconds()), 3) if last_commit else None,
        "rto_seconds": round(first_ack - stopped, 3) if first_ack else None,
        "failover_seconds": round(failed_over - stopped, 3),
        "every_tenant_answered": answered,
        "writes_acked": len(writer.acked),
        "writes_acked_before_stop": sum(a.at < stopped for a in writer.acked),
        "writes_found": found,
        "writes_failed": writer.failed,
        "lost": len(writer.acked) - found,
        "failover_id": record.id,
    }
