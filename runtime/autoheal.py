"""Auto-heal: small playbooks that act on a tenant's open anomaly (runtime/anomaly.py).

After each detection run, every open anomaly gets the playbooks of its metric, in order
(PLAYBOOKS_BY_METRIC). Each playbook is:

- small and idempotent: it looks at the current state and changes only what is still
  wrong (a woken tenant is not woken again, a failed run is not stuck any more);
- guarded: its guard says why there is nothing to do (recorded as `skipped`, no change);
- audited: a change is recorded as `runtime.autoheal` in the tenant's audit trail, in the
  same transaction as the change when the change is in the database;
- run once per anomaly: an `ok` or `skipped` attempt (AutohealRun) ends it for that
  episode, so the next minute's run does not repeat it;
- never looping: a failed attempt is tried again at the next run, and a second failure is
  `escalated`: an `autoheal.escalated` alert with severity `page` goes to staff, and the
  playbook is not tried again for that anomaly.

Switching off: settings.LEVQOR_AUTOHEAL_ENABLED (everything), LEVQOR_AUTOHEAL_DISABLED
(playbook names, or "*"), and AutohealSwitch rows in the staff admin, for the fleet or
one tenant, per playbook or "*". A switched-off playbook is not attempted and leaves no
record; switched on again while the anomaly is open, it runs at the next minute.

Playbooks:
- `wake_hibernated`: a hibernated tenant with an anomaly is in use: wake it.
- `restart_worker_pool`: the tenant's pool of task slots (runtime/capacity.py): drop
  the slots of tasks started over LEVQOR_AUTOHEAL_STUCK_MINUTES ago (a dead or hung
  worker's), re-count its waiting tasks, and send its held tasks, within the plan's cap.
- `requeue_stuck_runs`: workflow runs `running` for over LEVQOR_AUTOHEAL_STUCK_MINUTES
  are failed (marked as requeued) and run again in the background.
- `open_breakers`: the tenant's downstreams (its SIEM streams; Stripe when billing is on;
  the staff alert webhook `webhook:alerts` when one is set) are probed; those failing get their circuit breaker opened (runtime/breakers.py). Every
  run then probes the breakers auto-heal opened, and a successful probe closes them.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Callable

from django.conf import settings
from django.db import transaction
from django.db.models import Q
from django.utils import timezone

from compliance import audit
from compliance.alerts import alert_raise
from compliance.models import Alert
from runtime.anomaly import API_CALLS, ERROR_RATE, JOB_SUCCESS, P95, QUEUE_DEPTH
from runtime.models import Anomaly, AutohealRun, AutohealSwitch
from tenants.context import tenant_context, tenant_db
from tenants.models import Tenant

logger = logging.getLogger(__name__)
ACTOR = "system:autoheal"
EVENT = "runtime.autoheal"
MAX_ATTEMPTS = 2  # the second failure escalates
Status = AutohealRun.Status


class Skip(Exception):
    """Raised by a guard: nothing to do (the reason is recorded)."""


@dataclass
class Context:
    tenant: Tenant
    anomaly: Anomaly
    now: datetime


@dataclass(frozen=True)
class Playbook:
    name: str
    description: str
    act: Callable[[Context], dict]  # raises Skip when its guard finds nothing to do; returns what it did
    transactional: bool = True  # its change is in the database: audit it in the same transaction


# --- the playbooks ---------------------------------------------------------------------------


def wake_hibernated(ctx: Context) -> dict:
    from runtime import hibernation

    if ctx.tenant.hibernated_at is None:
        raise Skip("the tenant is not hibernated")
    hibernated_at = ctx.tenant.hibernated_at
    if hibernation.wake(ctx.tenant) is None:
        raise Skip("the tenant was woken meanwhile")
    return {"action": "woke", "hibernated_at": hibernated_at.isoformat()}


def requeue_stuck_runs(ctx: Context) -> dict:
    """Fail the runs stuck in `running` and run each again, in the background."""
    from workflows.models import WorkflowRun

    cutoff = ctx.now - timedelta(minutes=settings.LEVQOR_AUTOHEAL_STUCK_MINUTES)
    stuck = list(WorkflowRun.objects.select_for_update(skip_locked=True)
                 .filter(status=WorkflowRun.Status.RUNNING, created_at__lt=cutoff)
                 .order_by("created_at")[:settings.LEVQOR_AUTOHEAL_MAX_REQUEUE])
    if not stuck:
        raise Skip(f"no run has been running for over {settings.LEVQOR_AUTOHEAL_STUCK_MINUTES} minutes")
    for run in stuck:
        run.status = WorkflowRun.Status.FAILED
        run.finished_at = ctx.now
        run.result = {**(run.result or {}), "error": "stuck in running; failed and run again by auto-heal"}
        run.save(update_fields=["status", "finished_at", "result"])
    tenant_id = ctx.tenant.id
    reruns = [(str(run.workflow_id), run.input, str(run.id)) for run in stuck]
    transaction.on_commit(lambda: _queue_reruns(tenant_id, reruns), using=tenant_db())
    return {"action": "requeued", "runs": [r[2] for r in reruns]}


def _queue_reruns(tenant_id: int, reruns: list[tuple[str, dict, str]]) -> None:
    from runtime.metrics_tasks import rerun_stuck_run

    for workflow_id, run_input, stuck_id in reruns:
        rerun_stuck_run.delay_for(tenant_id, workflow_id, run_input, stuck_id)


def downstreams(tenant: Tenant) -> list[str]:
    """The breaker names of what this tenant's requests and jobs call out to."""
    from compliance.models import AuditStream

    names = [f"siem:{pk}" for pk in AuditStream.objects.exclude(state=AuditStream.State.PAUSED)
             .order_by("pk").values_list("pk", flat=True)]
    if settings.STRIPE_SECRET_KEY:
        names.append("stripe")
    if settings.LEVQOR_ALERT_WEBHOOK_URL:
        from runtime.alerting import WEBHOOK_BREAKER

        names.append(WEBHOOK_BREAKER)  # fleet-wide: where this tenant's alerts go out
    return names


def open_breakers(ctx: Context) -> dict:
    """Probe the tenant's downstreams whose breaker is closed; open those that fail."""
    from runtime import breakers

    checked, failing = [], []
    for name in downstreams(ctx.tenant):
        if breakers.state(name) != breakers.CLOSED:
            continue
        checked.append(name)
        if not breakers.probe(name):
            failing.append(name)
    if not failing:
        raise Skip("every downstream answered its probe" if checked else "no downstream with a closed breaker")
    for name in failing:
        breakers.open(name, reason=f"auto-heal: {ctx.anomaly.explanation}"[:300], actor=ACTOR)
    return {"action": "opened_breakers", "opened": failing, "pending": failing, "probed": checked}


def restart_worker_pool(ctx: Context) -> dict:
    """Restart the tenant's worker pool (runtime/capacity.py) within its plan's cap: drop
    the slot leases of tasks started over LEVQOR_AUTOHEAL_STUCK_MINUTES ago (a worker that
    died or hangs holds them until the lease ends), re-count its waiting tasks from the
    broker, and send its held tasks as far as the cap allows."""
    import time

    from levqor.redis import client as redis_client
    from runtime import capacity, queues

    tenant_id = ctx.tenant.id
    r = redis_client()
    slots = capacity.redis_key(tenant_id, "slots")  # lease end per running task's token
    started_before = time.time() - settings.LEVQOR_AUTOHEAL_STUCK_MINUTES * 60
    stuck = r.zrangebyscore(slots, "-inf", started_before + settings.LEVQOR_POOL_SLOT_SECONDS)
    if stuck:
        r.zrem(slots, *stuck)
    queues.forget()
    counts, exact = queues._scan()
    recounted = None
    if exact:
        before = int(r.get(capacity.redis_key(tenant_id, "queued")) or 0)
        if before != counts.get(tenant_id, 0):
            recounted = {"from": before, "to": counts.get(tenant_id, 0)}
            r.set(capacity.redis_key(tenant_id, "queued"), counts.get(tenant_id, 0))
    released = capacity.release(tenant_id)
    if not (stuck or recounted or released):
        status = capacity.pool_status(tenant_id)
        raise Skip(f"no stuck slot, and {status['held']} held task(s) wait for the pool's cap "
                   f"({status['running']} of {status['worker_pool_max']} slots in use)")
    return {"action": "restarted_pool", "stuck_slots_dropped": len(stuck), "queued_recounted": recounted,
            "tasks_released": released, "worker_pool_max": capacity.limits_of(tenant_id)["worker_pool_max"]}


PLAYBOOKS: dict[str, Playbook] = {p.name: p for p in (
    Playbook("wake_hibernated", "wake a hibernated tenant that shows activity", wake_hibernated),
    Playbook("restart_worker_pool", "drop stuck task slots and send held tasks, within the plan's cap",
             restart_worker_pool, transactional=False),
    Playbook("requeue_stuck_runs", "fail and run again workflow runs stuck in running", requeue_stuck_runs),
    Playbook("open_breakers", "open the breaker of a failing downstream; closed when its probe succeeds",
             open_breakers, transactional=False),
)}
PLAYBOOKS_BY_METRIC: dict[str, tuple[str, ...]] = {
    P95: ("wake_hibernated", "open_breakers"),
    ERROR_RATE: ("wake_hibernated", "open_breakers"),
    QUEUE_DEPTH: ("wake_hibernated", "restart_worker_pool", "requeue_stuck_runs"),
    JOB_SUCCESS: ("wake_hibernated", "requeue_stuck_runs", "open_breakers"),
    API_CALLS: ("wake_hibernated",),
}


# --- switches ----------------------------------------------------------------------------------


def enabled(tenant_id: int, playbook: str) -> bool:
    """Whether `playbook` may run for the tenant: settings, then fleet switches, then the
    tenant's own (a tenant cannot turn on what the fleet turned off)."""
    if not settings.LEVQOR_AUTOHEAL_ENABLED:
        return False
    disabled = set(settings.LEVQOR_AUTOHEAL_DISABLED)
    if "*" in disabled or playbook in disabled:
        return False
    return not AutohealSwitch.objects.filter(Q(tenant_id__isnull=True) | Q(tenant_id=tenant_id),
                                             playbook__in=(playbook, "*"), enabled=False).exists()


def switch(*, playbook: str, enabled: bool, tenant_id: int | None = None, actor: str, reason: str = "") -> AutohealSwitch:
    """Turn a playbook (or "*") off or on, for the fleet or one tenant."""
    from levqor.errors import APIError

    if playbook != "*" and playbook not in PLAYBOOKS:
        raise APIError("invalid_input", f"unknown playbook {playbook!r}",
                       details={"param": "playbook", "allowed": ["*", *PLAYBOOKS]})
    row, _ = AutohealSwitch.objects.update_or_create(
        tenant_id=tenant_id, playbook=playbook, defaults={"enabled": enabled, "changed_by": actor[:200],
                                                          "reason": reason[:500]})
    return row


# --- running -----------------------------------------------------------------------------------


def run(*, now: datetime | None = None) -> dict:
    """After detection: probe what auto-heal opened, then act on every open anomaly."""
    now = now or timezone.now()
    outcome = {"closed_breakers": close_recovered_breakers(now=now), "attempts": []}
    anomalies = Anomaly.dangerously_all_tenants.filter(resolved_at__isnull=True).order_by("started_at", "pk")
    tenants = {t.pk: t for t in Tenant.objects.filter(pk__in={a.tenant_id for a in anomalies})}
    for anomaly in anomalies:
        tenant = tenants.get(anomaly.tenant_id)
        if tenant is None or tenant.status != Tenant.Status.ACTIVE:
            continue
        for name in PLAYBOOKS_BY_METRIC.get(anomaly.metric, ()):
            status = attempt(PLAYBOOKS[name], tenant, anomaly, now=now)
            if status is not None:
                outcome["attempts"].append({"anomaly": anomaly.pk, "playbook": name, "status": status})
    return outcome


def attempt(playbook: Playbook, tenant: Tenant, anomaly: Anomaly, *, now: datetime) -> str | None:
    """Run one playbook for one anomaly unless it is done, switched off or escalated.
    Returns the attempt's status, or None when nothing was attempted."""
    runs = list(AutohealRun.dangerously_all_tenants.filter(anomaly=anomaly, playbook=playbook.name))
    if any(r.status != Status.FAILED for r in runs) or not enabled(tenant.id, playbook.name):
        return None
    number = len(runs) + 1
    ctx = Context(tenant=tenant, anomaly=anomaly, now=now)
    with tenant_context(tenant):
        try:
            if playbook.transactional:
                with transaction.atomic(using=tenant_db()), transaction.atomic():
                    detail = playbook.act(ctx)
                    _record_ok(playbook, ctx, number, detail)
            else:
                detail = playbook.act(ctx)
                with transaction.atomic():
                    _record_ok(playbook, ctx, number, detail)
        except Skip as skip:
            _record(playbook, ctx, number, Status.SKIPPED, detail={"reason": str(skip)})
            return Status.SKIPPED
        except Exception as exc:  # a playbook's failure is recorded, retried once, then escalated
            logger.warning("auto-heal %s failed for tenant %s (attempt %s)", playbook.name, tenant.slug, number,
                           exc_info=True)
            return _failed(playbook, ctx, number, exc)
    return Status.OK


def _record(playbook: Playbook, ctx: Context, number: int, status: str, *, detail: dict | None = None,
            error: str = "") -> AutohealRun:
    return AutohealRun.dangerously_all_tenants.create(
        tenant_id=ctx.tenant.id, anomaly=ctx.anomaly, playbook=playbook.name, attempt=number, status=status,
        detail_json=detail or {}, error=error[:500])


def _record_ok(playbook: Playbook, ctx: Context, number: int, detail: dict) -> None:
    _record(playbook, ctx, number, Status.OK, detail=detail)
    audit.record(EVENT, tenant_id=ctx.tenant.id, actor=ACTOR, metadata={
        "playbook": playbook.name, "anomaly_id": ctx.anomaly.pk, "metric": ctx.anomaly.metric, "attempt": number,
        **{k: v for k, v in detail.items() if k != "pending"}})


def _failed(playbook: Playbook, ctx: Context, number: int, exc: Exception) -> str:
    error = f"{type(exc).__name__}: {exc}"
    if number < MAX_ATTEMPTS:
        _record(playbook, ctx, number, Status.FAILED, error=error)
        return Status.FAILED
    with transaction.atomic():
        _record(playbook, ctx, number, Status.ESCALATED, error=error)
        alert_raise(kind="autoheal.escalated", tenant_id=ctx.tenant.id, severity="page", audience=Alert.Audience.STAFF,
                    message=f"Auto-heal '{playbook.name}' failed twice for {ctx.tenant.slug} "
                            f"({ctx.anomaly.explanation}); a person needs to look: {error}"[:2000],
                    metadata={"playbook": playbook.name, "anomaly_id": ctx.anomaly.pk, "metric": ctx.anomaly.metric,
                              "error": error[:500]},
                    dedupe_key=f"{ctx.anomaly.pk}:{playbook.name}")
    return Status.ESCALATED


def close_recovered_breakers(*, now: datetime) -> list[str]:
    """Probe each breaker auto-heal opened and has not seen closed; a successful probe
    closes it (audited). One closed by someone else is just marked closed."""
    from runtime import breakers

    closed = []
    pending = AutohealRun.dangerously_all_tenants.filter(playbook="open_breakers", status=Status.OK,
                                                         detail_json__has_key="pending")
    for run in pending:
        still = []
        for name in run.detail_json["pending"]:
            if breakers.state(name) == breakers.CLOSED:
                continue  # closed by staff, or by another probe
            try:
                healthy = breakers.probe(name)
            except LookupError:
                healthy = False
            if not healthy:
                still.append(name)
                continue
            closed.append(name)
            tenant = Tenant.objects.filter(pk=run.tenant_id).first()
            if tenant is not None:
                with tenant_context(tenant):
                    audit.record(EVENT, tenant_id=run.tenant_id, actor=ACTOR, metadata={
                        "playbook": "open_breakers", "anomaly_id": run.anomaly_id, "action": "closed_breaker",
                        "breaker": name})
        detail = {k: v for k, v in run.detail_json.items() if k != "pending"}
        if still:
            detail["pending"] = still
        if still != run.detail_json["pending"]:
            detail["closed"] = sorted(set(detail.get("closed", [])) | (set(run.detail_json["pending"]) - set(still)))
            AutohealRun.dangerously_all_tenants.filter(pk=run.pk).update(detail_json=detail)
    return closed
