"""Region failover: promote a region's replica when its primary server is lost.

Scope: each region's tenant database server, which holds the database-per-tenant tenants
and the template database. The platform database (DATABASE_URL: the public schema and
the schema-per-tenant tenants) is a managed primary whose high availability is the
operator's (docs/deploy.md); Levqor does not fail it over.

A failover (`manage.py failover`, or the health check at the
LEVQOR_FAILOVER_AFTER_FAILURES-th consecutive failed probe of a primary):
1. is refused, changing nothing, when there is nothing (or nothing safe) to do: no
   replica, the region is on the platform database's server, already failed over,
   another failover of the region running, or the primary still answers (it would keep
   taking writes from processes not yet switched);
2. promotes the replica (`pg_promote(wait => true)`), unless an earlier attempt did,
   and stops it waiting for synchronous standbys it no longer has;
3. in one transaction, records the promoted server in RegionState (encrypted), a
   `dr.failover` event in each affected tenant's trail and the finished Failover row.
   Tenant aliases take their server from the region map at connect time
   (tenants/broker.py), so that one row repoints every tenant of the region: this
   process at once, the others within LEVQOR_REGION_MAP_SECONDS;
4. then runs the DNS step, raises a staff alert and emails each affected tenant's owners
   and admins. These report their failures rather than undo anything: the data path
   has already moved.
Steps 2-3 failing leave the Failover row `failed` and raise a `dr.failover_failed` alert;
running the failover again resumes (an already promoted replica is not promoted twice).

Measures kept on the Failover row:
- RPO: the replica lag last seen while the primary was alive, from the primary's
  pg_stat_replication (WAL bytes the replica had not flushed, and `flush_lag`), sampled
  by every health check. Replay lag is not loss (promotion replays what was received);
  the replica's last replayed commit (pg_last_xact_replay_timestamp) is in the detail.
- RTO: from the first failed health check (or the start of the failover, when none had
  failed) to the region map naming the promoted server.
"""
from __future__ import annotations

import json
import logging
import time
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone as dt_timezone

import dj_database_url
import psycopg2
from django.conf import settings
from django.core.mail import send_mail
from django.db import connection, transaction
from django.utils import timezone

from compliance import audit
from compliance.alerts import alert_raise
from compliance.models import Alert
from levqor.redis import client as redis_client
from runtime import dns
from runtime.models import Failover, RegionState
from tenants import broker, secrets

logger = logging.getLogger(__name__)

_LOCK_CLASS = 7303  # advisory lock namespace of region failovers (audit chains use 7301)
# A `running` failover younger than this blocks another; an older one lost its process.
RUNNING_BLOCKS_FOR = timedelta(minutes=5)
PROMOTE_WAIT_SECONDS = 60
HEALTH_STATE_SECONDS = 3600  # how long Redis keeps a region's failure count and lag sample


class FailoverRefused(Exception):
    """Nothing was changed: the region cannot, or need not, be failed over now."""

    def __init__(self, code: str, message: str):
        super().__init__(message)
        self.code = code


class FailoverFailed(Exception):
    """The failover started and did not finish; its Failover row says where it stopped."""


@dataclass(frozen=True)
class Preflight:
    region: str
    primary: dict
    replica_url: str
    replica: dict


def address(server: dict) -> str:
    """host:port of a server, what logs and alerts may show (never the DSN)."""
    return f"{server.get('HOST') or 'localhost'}:{server.get('PORT') or 5432}"


def _reason(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0][:300]


@contextmanager
def _cursor(server: dict, *, statement_timeout_ms: int | None):
    conn = psycopg2.connect(
        dbname="postgres", user=server.get("USER") or None, password=server.get("PASSWORD") or None,
        host=server.get("HOST") or None, port=server.get("PORT") or None,
        connect_timeout=settings.LEVQOR_HEALTH_CHECK_TIMEOUT,
        options=f"-c statement_timeout={statement_timeout_ms}" if statement_timeout_ms else None,
    )
    conn.autocommit = True
    try:
        with conn.cursor() as cursor:
            yield cursor
    finally:
        conn.close()


# --- health checks ---------------------------------------------------------------------

_LAG_SQL = """
SELECT count(*), max(pg_wal_lsn_diff(pg_current_wal_lsn(), flush_lsn)),
       max(EXTRACT(EPOCH FROM flush_lag)), max(EXTRACT(EPOCH FROM replay_lag))
FROM pg_stat_replication
"""


def probe(server: dict, *, replication: bool) -> dict | None:
    """`SELECT 1` on the server, within LEVQOR_HEALTH_CHECK_TIMEOUT (raises psycopg2.Error
    when it does not answer). With `replication`, also returns how far its standbys are
    behind: the sample a later failover takes its RPO from."""
    timeout_ms = settings.LEVQOR_HEALTH_CHECK_TIMEOUT * 1000
    with _cursor(server, statement_timeout_ms=timeout_ms) as cursor:
        cursor.execute("SELECT 1")
        if not replication:
            return None
        cursor.execute(_LAG_SQL)
        standbys, lag_bytes, flush_lag, replay_lag = cursor.fetchone()
    # No lag column is NULL while a standby streams, except when it is idle and caught up.
    return {"at": time.time(), "standbys": standbys,
            "lag_bytes": int(lag_bytes or 0) if standbys else None,
            "flush_lag_seconds": float(flush_lag or 0) if standbys else None,
            "replay_lag_seconds": float(replay_lag or 0) if standbys else None}


def _key(region: str, what: str) -> str:
    return f"levqor:dr:{region}:{what}"


def check_region_health() -> dict[str, str]:
    """Probe each region's primary; fail a region over at its Nth consecutive failure.

    Run every 10 s by Celery beat. The failure count lives in Redis so that it survives
    from one run to the next whichever worker runs it; a success resets it."""
    return {name: _check_region(name) for name in settings.LEVQOR_REGIONS}


def _check_region(name: str) -> str:
    region = settings.LEVQOR_REGIONS[name]
    check_replica(name)  # keeps the replica's circuit breaker current; never blocks the primary's check
    try:
        sample = probe(broker.server_config(name), replication=bool(region.replica_url))
    except psycopg2.Error as exc:
        return _primary_failed(name, exc)
    _forget_failures(name)
    if sample is not None:
        redis_client().set(_key(name, "lag"), json.dumps(sample), ex=HEALTH_STATE_SECONDS)
    return "ok"


def _primary_failed(name: str, exc: psycopg2.Error) -> str:
    after = settings.LEVQOR_FAILOVER_AFTER_FAILURES
    r = redis_client()
    failures = r.incr(_key(name, "failures"))
    r.expire(_key(name, "failures"), HEALTH_STATE_SECONDS)
    r.set(_key(name, "first_failure"), time.time(), nx=True, ex=HEALTH_STATE_SECONDS)
    logger.warning("region %s: primary health check failed (%d/%d): %s", name, failures, after, _reason(exc))
    if failures < after:
        return f"failing {failures}/{after}"
    if failures > after:  # tried once, at the Nth: a failover that failed is retried by staff, not every 10 s
        return f"down ({failures} failed checks; failover attempted at the {after}th)"
    try:
        record = failover(name, trigger="health_check", actor="system:health-check",
                          reason=f"{after} consecutive failed health checks; last: {_reason(exc)}")
    except FailoverRefused as refused:
        if refused.code in ("primary_answers", "running"):
            _forget_failures(name)  # it came back, or is being handled: count afresh
        elif refused.code in ("no_replica", "already_failed_over"):
            alert_raise(kind="dr.failover_failed", audience=Alert.Audience.STAFF, severity="critical",
                        message=f"The primary of region {name} failed {after} health checks in a row and cannot "
                                f"be failed over: {refused}", dedupe_key=f"region-{name}-no-failover")
        return f"refused: {refused}"
    except FailoverFailed as failed:
        return f"failed: {failed}"
    return f"failed over (failover {record.id})"


def check_replica(name: str) -> dict | None:
    """Whether the region's replica answers, and as a standby, through its circuit breaker
    `replica:<region>` (runtime/breakers.py): while that is open the replica is reported
    down without a connection attempt. None when the region has no replica.

    Only health checks go through the breaker. A failover promotes the replica whatever
    the breaker says: it is the last resort, and a replica that really is down fails the
    promotion on its own."""
    from runtime import breakers

    region = settings.LEVQOR_REGIONS[name]
    if not region.replica_url:
        return None
    try:
        with breakers.guard(f"replica:{name}"):
            with _cursor(dj_database_url.parse(region.replica_url),
                         statement_timeout_ms=settings.LEVQOR_HEALTH_CHECK_TIMEOUT * 1000) as cursor:
                cursor.execute("SELECT pg_is_in_recovery()")
                standby = cursor.fetchone()[0]
    except breakers.BreakerOpen as exc:
        return {"answers": False, "standby": None, "detail": f"not checked: {exc.message}"}
    except psycopg2.Error as exc:
        return {"answers": False, "standby": None, "detail": f"does not answer: {_reason(exc)}"}
    return {"answers": True, "standby": bool(standby), "detail": "answers as a standby" if standby else
            "answers but is not a standby: promoted, or not replicating"}


def _forget_failures(name: str) -> None:
    redis_client().delete(_key(name, "failures"), _key(name, "first_failure"))


def _lag_sample(name: str) -> dict | None:
    raw = redis_client().get(_key(name, "lag"))
    return json.loads(raw) if raw else None


def _first_failure_at(name: str) -> datetime | None:
    raw = redis_client().get(_key(name, "first_failure"))
    return datetime.fromtimestamp(float(raw), tz=dt_timezone.utc) if raw else None


# --- failover ---------------------------------------------------------------------------


def preflight(name: str, *, force: bool = False) -> Preflight:
    """Everything that can refuse a failover, checked before anything changes."""
    region = settings.LEVQOR_REGIONS.get(name)
    if region is None:
        raise FailoverRefused("unknown_region",
                              f"no region {name!r} in LEVQOR_REGIONS ({', '.join(settings.LEVQOR_REGIONS)})")
    if not region.replica_url:
        raise FailoverRefused("no_replica",
                              f"region {name} has no replica_url in LEVQOR_REGIONS: nothing to fail over to")
    pre = Preflight(region=name, primary=broker.server_config(name), replica_url=region.replica_url,
                    replica=dj_database_url.parse(region.replica_url))
    if address(pre.primary) == address(settings.DATABASES["default"]):
        # Promoting it would move the region's tenant databases but not the platform
        # connection, nor the schema-per-tenant tenants.
        raise FailoverRefused("platform_server", f"region {name} is served by the platform database's server "
                              "(DATABASE_URL), whose high availability is the operator's: fail it over there")
    _refuse_if_failed_over(pre)
    if not force:
        try:
            probe(pre.primary, replication=False)
        except psycopg2.Error:
            pass
        else:
            raise FailoverRefused("primary_answers", f"the primary of region {name} ({address(pre.primary)}) still "
                                  "answers: failing over now would split writes between two servers. Stop it "
                                  "first, or pass --force")
    return pre


def _refuse_if_failed_over(pre: Preflight) -> None:
    broker.refresh_region_map()  # another process may have failed it over a moment ago
    if address(broker.server_config(pre.region)) != address(pre.replica):
        return
    state = RegionState.objects.filter(region=pre.region).first()
    when = f" at {state.failed_over_at:%Y-%m-%d %H:%M:%S} UTC" if state and state.failed_over_at else ""
    raise FailoverRefused("already_failed_over", f"region {pre.region} already failed over to its replica "
                          f"({address(pre.replica)}){when}. Write the new topology into LEVQOR_REGIONS (the promoted "
                          "server as database_url, a new replica_url) before failing over again")


def dry_run(name: str, *, force: bool = False) -> dict:
    """What a failover would do now, changing nothing (raises FailoverRefused like it)."""
    pre = preflight(name, force=force)
    try:
        with _cursor(pre.replica, statement_timeout_ms=settings.LEVQOR_HEALTH_CHECK_TIMEOUT * 1000) as cursor:
            cursor.execute("SELECT pg_is_in_recovery(), "
                           "pg_wal_lsn_diff(pg_last_wal_receive_lsn(), pg_last_wal_replay_lsn())")
            in_recovery, unreplayed = cursor.fetchone()
        replica = {"in_recovery": in_recovery, "unreplayed_bytes": int(unreplayed) if unreplayed is not None else None}
    except psycopg2.Error as exc:
        replica = {"error": f"unreachable, the failover would fail: {_reason(exc)}"}
    return {"region": name, "primary": address(pre.primary), "promote": address(pre.replica), "replica": replica,
            "tenants": len(_affected_tenants(name)), "last_lag_sample": _lag_sample(name)}


def failover(name: str, *, trigger: str = "manual", actor: str = "system", reason: str = "",
             force: bool = False) -> Failover:
    """Fail region `name` over to its replica (module docstring). Returns the Failover row;
    raises FailoverRefused (nothing changed) or FailoverFailed (row `failed`, alert raised)."""
    pre = preflight(name, force=force)
    record = _claim(pre, trigger=trigger, actor=actor, reason=reason)
    logger.warning("region %s: failing over from %s to %s (failover %s, %s)", name, address(pre.primary),
                   address(pre.replica), record.id, trigger)
    tenants = []
    try:
        tenants = _affected_tenants(name)
        promotion = _promote(pre.replica)
        _switch(pre, record, tenants, promotion)
    except Exception as exc:
        _fail(record, exc, tenants)
        raise FailoverFailed(f"failover {record.id} of region {name} failed: {_reason(exc)}") from exc
    _announce(pre, record, tenants)
    return record


def _claim(pre: Preflight, *, trigger: str, actor: str, reason: str) -> Failover:
    """The `running` row, written under a per-region lock so two failovers never overlap."""
    with transaction.atomic():
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_advisory_xact_lock(%s, hashtext(%s))", [_LOCK_CLASS, pre.region])
        running = Failover.objects.filter(region=pre.region, status=Failover.Status.RUNNING).first()
        if running is not None:
            if running.started_at > timezone.now() - RUNNING_BLOCKS_FOR:
                raise FailoverRefused("running", f"failover {running.id} of region {pre.region} is running "
                                      f"(started {running.started_at:%H:%M:%S} UTC)")
            running.status, running.finished_at = Failover.Status.FAILED, timezone.now()
            running.detail_json = {**running.detail_json, "error": "abandoned: its process stopped before finishing"}
            running.save(update_fields=["status", "finished_at", "detail_json"])
        _refuse_if_failed_over(pre)  # one may have finished between the preflight and the lock
        return Failover.objects.create(region=pre.region, trigger=trigger, actor=actor, reason=reason[:2000])


def _affected_tenants(name: str) -> list:
    from tenants.models import Tenant, TenantDatabase

    ids = TenantDatabase.dangerously_all_tenants.filter(region=name).values("tenant_id")
    return list(Tenant.objects.filter(id__in=ids).order_by("id"))


def _promote(replica: dict) -> dict:
    """Promote the replica and wait until it accepts writes; an already promoted one (an
    earlier attempt, or an operator) is left as it is."""
    with _cursor(replica, statement_timeout_ms=None) as cursor:
        cursor.execute("SELECT pg_is_in_recovery(), "
                       "pg_wal_lsn_diff(pg_last_wal_receive_lsn(), pg_last_wal_replay_lsn())")
        in_recovery, unreplayed = cursor.fetchone()
        if in_recovery:
            cursor.execute("SELECT pg_promote(wait => true, wait_seconds => %s)", [PROMOTE_WAIT_SECONDS])
            if not cursor.fetchone()[0]:
                raise RuntimeError(f"the replica did not finish promotion within {PROMOTE_WAIT_SECONDS} s")
        cursor.execute("SELECT pg_last_xact_replay_timestamp()")
        (last_commit,) = cursor.fetchone()
        synchronous_off = _stop_waiting_for_standbys(cursor)
    return {"promoted_now": in_recovery, "unreplayed_bytes_at_promotion": int(unreplayed) if unreplayed else 0,
            "last_replayed_commit_at": last_commit.isoformat() if last_commit else None,
            "synchronous_replication_turned_off": synchronous_off}


def _stop_waiting_for_standbys(cursor) -> bool:
    """A replica copied from a synchronously replicated primary inherits its
    synchronous_standby_names; promoted with no standby of its own, every commit would
    wait forever. Turn it off (until a new replica is attached: docs/deploy.md)."""
    cursor.execute("SELECT current_setting('synchronous_standby_names') <> '' "
                   "AND NOT EXISTS (SELECT 1 FROM pg_stat_replication)")
    if not cursor.fetchone()[0]:
        return False
    cursor.execute("ALTER SYSTEM SET synchronous_standby_names = ''")
    cursor.execute("SELECT pg_reload_conf()")
    return True


def _switch(pre: Preflight, record: Failover, tenants: list, promotion: dict) -> None:
    """Point the region at the promoted server: RegionState, the tenants' trails and the
    Failover row commit together."""
    now = timezone.now()
    sample = _lag_sample(pre.region)
    failure_at = _first_failure_at(pre.region) or record.started_at
    if sample is not None:
        sample["age_seconds"] = round(time.time() - sample["at"], 1)
        record.replica_lag_bytes = sample["lag_bytes"]
        record.rpo_seconds = sample["flush_lag_seconds"]
    record.rto_seconds = round((now - failure_at).total_seconds(), 3)
    record.status, record.finished_at = Failover.Status.DONE, now
    record.detail_json = {"from": address(pre.primary), "to": address(pre.replica), "lag_sample": sample,
                          "failure_at": failure_at.isoformat(), "tenants": [t.id for t in tenants], **promotion}
    with transaction.atomic():
        RegionState.objects.update_or_create(region=pre.region, defaults={
            "database_url_encrypted": secrets.encrypt(pre.replica_url), "failed_over_at": now})
        for tenant in tenants:
            audit.record("dr.failover", tenant_id=tenant.id, actor=record.actor, metadata={
                "region": pre.region, "failover_id": record.id, "trigger": record.trigger,
                "rpo_seconds": record.rpo_seconds, "replica_lag_bytes": record.replica_lag_bytes,
                "rto_seconds": record.rto_seconds})
        record.save()
    broker.refresh_region_map()
    _forget_failures(pre.region)


def _fail(record: Failover, exc: Exception, tenants: list) -> None:
    logger.error("region %s: failover %s failed: %s", record.region, record.id, _reason(exc))
    record.status, record.finished_at = Failover.Status.FAILED, timezone.now()
    record.detail_json = {**record.detail_json, "error": _reason(exc)}
    record.save()
    alert_raise(kind="dr.failover_failed", audience=Alert.Audience.STAFF, severity="critical",
                message=f"Failover {record.id} of region {record.region} failed: {_reason(exc)}. {len(tenants)} "
                        "tenant(s) affected. See docs/deploy.md, 'DR failover'.",
                metadata={"failover_id": record.id, "region": record.region}, dedupe_key=f"failover-{record.id}")


def _announce(pre: Preflight, record: Failover, tenants: list) -> None:
    """DNS, the staff alert and the tenants' emails; failures are reported on the row."""
    detail = dict(record.detail_json)
    try:
        dns.backend().repoint(region=pre.region, host=str(pre.replica.get("HOST") or ""),
                              port=str(pre.replica.get("PORT") or ""))
        detail["dns"] = "ok"
    except Exception as exc:  # a provider outage must not hide that the region moved
        logger.exception("region %s: DNS step failed", pre.region)
        detail["dns"] = f"failed: {_reason(exc)}"
    detail["emails_sent"] = sum(_email_tenant(tenant, record) for tenant in tenants)
    alert_raise(kind="dr.failover", audience=Alert.Audience.STAFF, severity="critical",
                message=f"Region {pre.region} failed over from {detail['from']} to {detail['to']}: "
                        f"{len(tenants)} tenant(s), {measures(record)}, DNS {detail['dns']}.",
                metadata={"failover_id": record.id, "region": pre.region, "tenants": len(tenants),
                          "rpo_seconds": record.rpo_seconds, "replica_lag_bytes": record.replica_lag_bytes,
                          "rto_seconds": record.rto_seconds, "dns": detail["dns"]},
                dedupe_key=f"failover-{record.id}")
    record.detail_json = detail
    record.save(update_fields=["detail_json"])


def _figure(value, unit: str) -> str:
    return "unknown" if value is None else f"{value} {unit}"


def measures(record: Failover) -> str:
    """RPO and RTO of a failover, as alerts and the command print them."""
    return (f"RPO {_figure(record.rpo_seconds, 's')} ({_figure(record.replica_lag_bytes, 'bytes')}), "
            f"RTO {_figure(record.rto_seconds, 's')}")


def _email_tenant(tenant, record: Failover) -> int:
    """One message to the tenant's owners and admins; 1 when it was sent."""
    from tenants.models import TenantUser

    recipients = {tenant.admin_email.lower()} if tenant.admin_email else set()
    recipients |= {email.lower() for email in TenantUser.dangerously_all_tenants.filter(
        tenant=tenant, role__in=("owner", "admin")).exclude(user__email="").values_list("user__email", flat=True)}
    if not recipients:
        return 0
    body = (f"The primary database server of region {record.region}, which holds {tenant.name}'s data, stopped "
            f"answering. At {record.finished_at:%Y-%m-%d %H:%M:%S} UTC Levqor switched your database to its "
            f"standby copy, and service resumed.\n\n"
            f"Replication lag last measured before the failure: {_figure(record.rpo_seconds, 's')} "
            f"({_figure(record.replica_lag_bytes, 'bytes')}); changes made within that window before the failure "
            "may be missing. Requests that failed during the switch can be retried.\n\n"
            "The event is in your organization's audit trail as dr.failover.\n")
    return send_mail(f"[Levqor] {tenant.name}: database failed over to its standby (region {record.region})", body,
                     settings.DEFAULT_FROM_EMAIL, sorted(recipients), fail_silently=True)
