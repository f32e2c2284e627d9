"""The DR drill, shared by tests/runtime/test_failover.py and bench/failover.py.

A real PostgreSQL primary with a streaming replica on free ports; writes through the
tenant API; the primary killed (`pg_ctl stop -m immediate`); the region failed over; then
what was measured and whether every acknowledged write is on the promoted server.

Two replications: synchronous (the default; nothing acknowledged may be lost) and
asynchronous (`PgPair(sync=False)`): the replica streams through DelayedLink, a relay that
holds what the primary sends for `link_delay` seconds (a WAN link's latency), so the replica
is measurably behind; the outage cuts the link and kills the primary together, and the WAL
still in flight is lost. The drill then measures that loss and checks it lies inside the
lag window (committed after the replica's newest replayed commit, before the stop).

initdb and postgres refuse to run as root: as root they run as the `postgres` OS user,
in a temporary directory (outside pytest's 0700 tree) that user owns.
"""
from __future__ import annotations

import glob
import os
import queue
import re
import shutil
import socket
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
fsync = off
"""
SYNCHRONOUS = "synchronous_standby_names = '*'\n"


def pg_bin(name: str) -> str:
    """A PostgreSQL server binary: Debian's newest /usr/lib/postgresql/<v>/bin, else PATH."""
    found = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"), key=lambda p: int(Path(p).parts[-3]))
    path = found[-1] if found else shutil.which(name)
    if not path:
        raise RuntimeError(f"PostgreSQL's {name} is required for the DR drill (Debian: postgresql-15)")
    return path


class DelayedLink:
    """A TCP relay the replica streams from the primary through: what the primary sends is
    delivered `delay` seconds later (the replica's answers go straight back), as over a
    slow link. `cut()` is the outage: connections close and what is in flight is dropped."""

    def __init__(self, target_port: int, delay: float):
        self.target_port, self.delay = target_port, delay
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.is_cut = threading.Event()
        self.sockets: list[socket.socket] = []
        self.queues: list[queue.Queue] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while not self.is_cut.is_set():
            try:
                replica, _ = self.listener.accept()
                primary = socket.create_connection(("127.0.0.1", self.target_port), timeout=5)
            except OSError:
                return  # cut (or the primary is gone: the replica retries)
            primary.settimeout(None)
            in_flight: queue.Queue = queue.Queue()
            self.sockets += [replica, primary]
            self.queues.append(in_flight)
            for target, args in ((self._hold, (primary, in_flight)), (self._deliver, (in_flight, replica)),
                                 (self._pass, (replica, primary))):
                threading.Thread(target=target, args=args, daemon=True).start()

    def _hold(self, primary: socket.socket, in_flight: queue.Queue) -> None:
        while True:
            try:
                data = primary.recv(65536)
            except OSError:
                data = b""
            in_flight.put((time.monotonic() + self.delay, data))
            if not data:
                return

    def _deliver(self, in_flight: queue.Queue, replica: socket.socket) -> None:
        while True:
            due, data = in_flight.get()
            time.sleep(max(0.0, due - time.monotonic()))
            if self.is_cut.is_set() or not data:
                _close(replica)
                return
            try:
                replica.sendall(data)
            except OSError:
                return

    def _pass(self, replica: socket.socket, primary: socket.socket) -> None:
        while True:
            try:
                data = replica.recv(65536)
                if not data:
                    break
                primary.sendall(data)
            except OSError:
                break
        _close(primary)

    def cut(self) -> None:
        self.is_cut.set()
        _close(self.listener)
        for in_flight in self.queues:
            in_flight.put((0.0, b""))
        for sock in self.sockets:
            _close(sock)


def _close(sock: socket.socket) -> None:
    try:
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass
    sock.close()


class PgPair:
    """A primary and its streaming replica; `close()` stops both and removes every file.

    `sync=False`: asynchronous replication through a DelayedLink of `link_delay` seconds;
    `stop_primary()` then cuts the link too, so the WAL in flight never arrives."""

    def __init__(self, *, sync: bool = True, link_delay: float = 1.0):
        self.sync, self.link_delay = sync, link_delay
        self.link: DelayedLink | None = None
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
            conf.write(PRIMARY_CONF.format(port=self.primary_port) + (SYNCHRONOUS if self.sync else ""))
        self.start_primary()
        self._run("pg_basebackup", "-h", "127.0.0.1", "-p", str(self.primary_port), "-U", "postgres",
                  "-D", str(self.replica_dir), "-R", "-X", "stream", "-c", "fast", "--no-sync")
        with open(self.replica_dir / "postgresql.conf", "a") as conf:
            conf.write(f"port = {self.replica_port}\n")
        if not self.sync:
            self.link = DelayedLink(self.primary_port, self.link_delay)
            auto = self.replica_dir / "postgresql.auto.conf"  # rewritten in place: keeps its owner
            auto.write_text(auto.read_text().replace(f"port={self.primary_port}", f"port={self.link.port}"))
        self._run("pg_ctl", "-D", str(self.replica_dir), "-l", str(self.folder / "replica.log"), "-w", "start")
        self._wait_for_streaming()
        return self

    def start_primary(self) -> None:
        self._run("pg_ctl", "-D", str(self.primary_dir), "-l", str(self.folder / "primary.log"), "-w", "start")

    def stop_primary(self) -> None:
        """Kill it: no checkpoint, no goodbye to the replica (what a crashed host looks like).
        Asynchronous: the link goes first (a zone outage), so what is in flight is lost."""
        if self.link is not None:
            self.link.cut()
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

    def wal_end(self) -> str | None:
        """The stopped primary's end of WAL (the LSN after its last record), read with
        pg_waldump from its newest segment: what it had written when it was killed."""
        as_postgres = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
        wal = self.primary_dir / "pg_wal"
        for segment in sorted((p.name for p in wal.iterdir() if re.fullmatch(r"[0-9A-F]{24}", p.name)), reverse=True):
            done = subprocess.run([*as_postgres, pg_bin("pg_waldump"), "-p", str(wal), segment],
                                  capture_output=True, text=True, timeout=60)
            # It reads up to the first invalid record and says where: "... length at 0/3000180: ...".
            # A newer segment that was preallocated or recycled holds no valid record at all.
            found = re.findall(r"(?:invalid record length|incorrect prev-link [0-9A-F]+/[0-9A-F]+) "
                               r"at ([0-9A-F]+/[0-9A-F]+)", done.stderr)
            if found and done.stdout.strip():
                return found[-1]
        return None

    def close(self) -> None:
        if self.link is not None:
            self.link.cut()
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
    wall: float = 0.0  # time.time() then: compared with PostgreSQL's commit timestamps


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
                    self.acked.append(Ack(tenant.id, name, time.monotonic(), time.time()))
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


def _lsn(text: str | None) -> int | None:
    if not text:
        return None
    high, low = text.split("/")
    return (int(high, 16) << 32) + int(low, 16)


def run_drill(pair: PgPair, tenants: list, *, region: str, warmup_writes: int = 100) -> dict:
    """Write, kill the primary, fail over, keep writing until every tenant has had 10
    writes acknowledged again; then look for every acknowledged write on the promoted server.

    Lag at the failure, measured rather than sampled: seconds from the replica's newest
    replayed commit (after promotion, which replays all it received) to the last write
    acknowledged before the stop; bytes from the killed primary's end of WAL to the
    promoted server's last replayed LSN. A missing write is "in the lag window" when it
    was acknowledged after that newest replayed commit and before the stop."""
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
    missing = []
    for tenant, _ in tenants:
        with pair.cursor(pair.replica_port, broker.tenant_database_name(tenant.id)) as cursor:
            cursor.execute("SELECT name FROM workflows_workflow")
            names = {row[0] for row in cursor.fetchall()}
        missing += [a for a in writer.acked if a.tenant_id == tenant.id and a.name not in names]
    with pair.cursor(pair.replica_port) as cursor:
        cursor.execute("SELECT pg_last_wal_replay_lsn()::text")
        (replayed_lsn,) = cursor.fetchone()
    wal_end = pair.wal_end()
    last_commit = record.detail_json.get("last_replayed_commit_at")
    last_commit_wall = datetime.fromisoformat(last_commit).timestamp() if last_commit else None
    before_stop = [a for a in writer.acked if a.at < stopped]
    last_ack_wall = max((a.wall for a in before_stop), default=None)
    in_window = [a for a in missing if a.at < stopped and last_commit_wall is not None and a.wall >= last_commit_wall]
    return {
        "replication": "synchronous" if pair.sync else f"asynchronous, {pair.link_delay} s link delay",
        "rpo_seconds": record.rpo_seconds,
        "rpo_bytes": record.replica_lag_bytes,
        # How old the replica's newest commit (pg_last_xact_replay_timestamp) was once the
        # primary was confirmed dead: with writes never pausing, an upper bound of the lag.
        "replica_behind_at_stop_seconds": round(max(0.0, (stopped_at - datetime.fromisoformat(last_commit))
                                                    .total_seconds()), 3) if last_commit else None,
        "lag_at_failure_seconds": round(max(0.0, last_ack_wall - last_commit_wall), 3)
        if last_ack_wall is not None and last_commit_wall is not None else None,
        "lag_at_failure_bytes": _lsn(wal_end) - _lsn(replayed_lsn) if wal_end and replayed_lsn else None,
        "primary_wal_end": wal_end,
        "promoted_replayed_lsn": replayed_lsn,
        "rto_seconds": round(first_ack - stopped, 3) if first_ack else None,
        "failover_seconds": round(failed_over - stopped, 3),
        "every_tenant_answered": answered,
        "writes_acked": len(writer.acked),
        "writes_acked_before_stop": len(before_stop),
        "writes_found": len(writer.acked) - len(missing),
        "writes_failed": writer.failed,
        "lost": len(missing),
        "lost_in_lag_window": len(in_window),
        # The oldest lost write: how long before the stop it was acknowledged.
        "oldest_lost_acked_before_stop_seconds": round(max(stopped - a.at for a in missing), 3) if missing else None,
        "failover_id": record.id,
    }
