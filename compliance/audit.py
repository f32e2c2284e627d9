"""Appending to a tenant's audit trail.

Each tenant's events form a hash chain: an event's hash covers its content, its `seq`
and the previous event's hash, and `seq` is unique per tenant, so the chain cannot fork.
Call `record()` inside the transaction of the change it records: both commit or
neither does.

Writing and chaining are separate, so that writers of one tenant do not queue behind
each other's commits (the chain used to be locked from each event to its commit, which
held a tenant to one commit at a time):
- `record()` inserts the event in the caller's transaction (or, called outside one, in
  a transaction of its own), in one statement. If the tenant's chain lock is free and
  none of its events waits to be sealed, the event is chained at once, and the lock
  lasts until that transaction commits: the uncontended case needs nothing more.
  Otherwise the event is stored unsealed (`seq`, `prev_hash`, `hash` NULL;
  `content_to_seal` holds what its hash will cover).
- After commit, the writer sees its unsealed events sealed before it returns (so before
  the request's response): one statement takes the chain lock and gives every unsealed
  event of the tenant from the writer's first one on, in id order, the next seq, the
  previous hash and its hash, and commits. The lock is held for that statement only;
  the threads of a process share one such statement per round (_see_sealed), and
  processes queue for the lock, finding their events sealed by the one ahead.
- A writer that does not get the lock within WAIT_MS (a slow transaction chained an
  event inline and holds it) leaves its events unsealed; so does one whose process dies
  between commit and seal. The tenant's next writer usually takes them along (those
  after the chain's head), readers that need the whole trail (verify, evidence, purge)
  call `seal_committed()`, and the periodic `seal_pending()` catches the rest.

The database refuses every UPDATE and DELETE of tenant_audit except sealing (the row
goes from unsealed to sealed once, its content unchanged) and `purge()` (migration 0007).
Sealing runs in SQL; verify_chain() recomputes every hash in Python (content_hash).
"""
from __future__ import annotations

import contextvars
import hashlib
import json
import logging
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import partial

from django.db import connection, transaction
from django.utils import timezone

from compliance import events
from compliance.models import AuditEvent

logger = logging.getLogger(__name__)
GENESIS = "0" * 64
SEAL_BATCH = 500  # events chained per sealing statement: keeps each seal transaction short
WAIT_MS = 200  # how long a writer waits its turn for the chain lock before leaving its events to seal_pending()
CONTENDED_SECONDS = 1.0  # see record()


@dataclass(frozen=True)
class RequestInfo:
    ip: str | None = None
    user_agent: str = ""


_request_info: contextvars.ContextVar[RequestInfo | None] = contextvars.ContextVar("levqor_audit_request", default=None)


@contextmanager
def request_context(request):
    token = _request_info.set(request_info(request))
    try:
        yield
    finally:
        _request_info.reset(token)


def request_info(request) -> RequestInfo | None:
    if request is None:
        return None
    from levqor.clientip import client_ip

    return RequestInfo(ip=client_ip(request), user_agent=(request.META.get("HTTP_USER_AGENT") or "")[:300])


def content_hash(*, prev_hash: str, tenant_id: int, seq: int, event: str, actor: str, ts, metadata: dict) -> str:
    payload = json.dumps(
        [prev_hash, tenant_id, seq, event, actor, ts.isoformat(), metadata],
        sort_keys=True, separators=(",", ":"), default=str,
    )
    return hashlib.sha256(payload.encode()).hexdigest()


def hashed_content(*, event: str, actor: str, ts, metadata: dict) -> str:
    """The event's own part of content_hash()'s payload: that JSON list after prev_hash,
    tenant and seq, without the brackets. The SQL that chains events (migration 0007)
    completes it as '["<prev_hash>",<tenant>,<seq>,' + this + ']'; verify_chain()
    recomputes every hash with content_hash() from the stored columns."""
    content = json.dumps([event, actor, ts.isoformat(), metadata], sort_keys=True, separators=(",", ":"), default=str)
    return content[1:-1]


def _canonical_json(metadata: dict) -> str:
    return json.dumps(metadata, sort_keys=True, separators=(",", ":"))


def _hashed_content_of(event: str, actor: str, ts, metadata_json: str) -> str:
    """hashed_content() from metadata already in canonical JSON (_canonical_json): the same
    text, since a JSON list is its items' JSON joined by commas; record() serializes the
    metadata once for both the column and the hash."""
    return json.dumps([event, actor, ts.isoformat()], separators=(",", ":"))[1:-1] + "," + metadata_json


def record(event: str, *, tenant_id: int, actor: str, metadata: dict | None = None, request=None) -> AuditEvent:
    events.check(event)
    metadata = json.loads(json.dumps(metadata or {}, default=str))  # what is hashed is what is stored
    metadata_json = _canonical_json(metadata)
    if request is None:
        info = _request_info.get()  # set by AuditRequestMiddleware during a request
    else:
        info = request_info(request) if not isinstance(request, RequestInfo) else request
    actor = actor[:200]
    user_agent = info.user_agent if info else ""
    ip = info.ip if info else None
    ts = timezone.now()
    pending = _thread.by_tenant.get(tenant_id)
    # One statement, so no transaction or savepoint of its own: inside the caller's
    # transaction it is part of it (and if it fails, so does that transaction: no change
    # commits without its event); outside one, it is its own. It chains the event if it
    # can and inserts it. A tenant whose chain this process found busy within
    # CONTENDED_SECONDS is busy: its event goes in unsealed rather than hold the chain
    # lock to the caller's commit while others wait to seal.
    contended = _contended_until.get(tenant_id, 0.0) > time.monotonic()
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT id, seq, prev_hash, hash, seal_from, xid "
            "FROM levqor_audit_append(%s, %s, %s, %s, %s, %s, %s, %s, %s, %s)",
            [tenant_id, not contended, pending.ids if pending else [], event, actor, ts, ip, user_agent,
             metadata_json, _hashed_content_of(event, actor, ts, metadata_json)])
        pk, seq, prev_hash, digest, seal_from, xid = cursor.fetchone()
    if pending is not None and pending.xid != xid:  # another transaction's, which rolled back
        pending = None
    if seq is None:
        if pending is None:
            pending = _thread.by_tenant[tenant_id] = _Pending(xid=xid, seal_from=seal_from)
        pending.ids.append(pk)
        pending.seal_from = min(pending.seal_from, seal_from)
        _contended_until[tenant_id] = time.monotonic() + CONTENDED_SECONDS
    transaction.on_commit(partial(_after_commit, tenant_id, pending, chained=seq is not None), robust=True)
    return AuditEvent(id=pk, tenant_id=tenant_id, seq=seq, event=event, actor=actor, ts=ts, ip=ip,
                      user_agent=user_agent, metadata_json=metadata, prev_hash=prev_hash, hash=digest)


_contended_until: dict[int, float] = {}  # tenant: until when record() writes its events unsealed


@dataclass
class _Pending:
    """The unsealed events one transaction wrote for one tenant (`ids`), and the id their
    seal starts from: the first of them, or an earlier event that levqor_audit_append saw
    waiting (one a writer left behind), so that this writer's seal takes it along.

    record() passes the ids to levqor_audit_append, so that a later event of the same
    transaction is not chained ahead of them; `xid` tells a rolled-back transaction's
    leftovers apart. The transaction's first commit hook seals, the others find `ids`
    empty."""

    xid: str
    seal_from: int
    ids: list[int] = field(default_factory=list)


class _ThreadPending(threading.local):
    def __init__(self):
        self.by_tenant: dict[int, _Pending] = {}  # this thread's transaction's, per tenant


_thread = _ThreadPending()


def _after_commit(tenant_id: int, pending: _Pending | None, *, chained: bool) -> None:
    """Once per event, after commit: see the transaction's unsealed events sealed, if not
    done yet; a chained event wakes the SIEM streams (a seal wakes them itself)."""
    if pending is not None and pending.ids:
        ids = {*pending.ids, pending.seal_from}
        pending.ids.clear()
        if _thread.by_tenant.get(tenant_id) is pending:
            del _thread.by_tenant[tenant_id]
        _see_sealed(tenant_id, ids)
    if chained and _has_streams(tenant_id):
        _wake_streams(tenant_id)


class _Waiting:
    """One tenant's events, committed by this process's threads, that wait for their seal,
    and whether one of these threads is sealing right now."""

    def __init__(self):
        self.ids: set[int] = set()
        self.sealing = False


_waiting: dict[int, _Waiting] = {}
_waiting_changed = threading.Condition()


def _see_sealed(tenant_id: int, ids: set[int]) -> None:
    """See these committed events sealed, with the other threads of this process (group
    commit): one thread seals all the events waiting when it starts, the others wait for
    it and issue no statement; then the next round starts. Between processes, the chain
    lock's queue orders the seals, and a seal covers every unsealed event of the tenant
    from its first id on, others' included.

    If the chain lock stays held beyond WAIT_MS (a slow transaction chained an event
    inline and has not committed), the round gives up: seal_pending() seals them later."""
    with _waiting_changed:
        waiting = _waiting.setdefault(tenant_id, _Waiting())
        waiting.ids |= ids
        while waiting.sealing and waiting.ids & ids:
            _waiting_changed.wait()
        if not waiting.ids & ids:  # the round that was running sealed them
            return
        batch, waiting.sealing = set(waiting.ids), True
    try:
        while _seal(tenant_id, from_id=min(batch), wait_ms=WAIT_MS) == SEAL_BATCH:
            pass
    finally:
        with _waiting_changed:
            waiting.ids -= batch
            waiting.sealing = False
            if not waiting.ids:
                del _waiting[tenant_id]
            _waiting_changed.notify_all()


def seal_committed(tenant_id: int) -> None:
    """Seal every event of the tenant committed so far, waiting for the chain lock as long
    as it takes: for readers that need the whole trail in the chain. Inside a caller's
    transaction the lock lasts until that one ends."""
    with transaction.atomic():
        while _seal(tenant_id, from_id=0, wait_ms=None) == SEAL_BATCH:
            pass


def seal_pending() -> dict[int, int]:
    """Seal, tenant by tenant, the events no writer saw sealed (it gave up waiting, or
    died between its commit and the seal); a tenant whose chain is held is left for the
    next sweep. {tenant id: events sealed}."""
    sealed = {}
    tenant_ids = AuditEvent.dangerously_all_tenants.filter(seq__isnull=True).values_list("tenant_id", flat=True)
    for tenant_id in set(tenant_ids):
        while batch := _seal(tenant_id, from_id=0, wait_ms=0):
            sealed[tenant_id] = sealed.get(tenant_id, 0) + batch
            if batch < SEAL_BATCH:
                break
    return sealed


def _seal(tenant_id: int, *, from_id: int, wait_ms: int | None) -> int | None:
    """One statement (levqor_audit_seal): take the tenant's chain lock, tried (wait_ms 0),
    waited for up to wait_ms, or as long as it takes (None), then seal up to SEAL_BATCH of
    its unsealed events from id from_id on, in id order. How many; None if the lock was
    not had. Outside a transaction the lock is held for this statement and its commit
    only; a sealer queued behind it (in another process) finds those events sealed and
    seals only what came since. The bound on ids keeps the lookup off the sealed rows'
    old index entries (see migration 0007)."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT levqor_audit_seal(%s, %s, %s, %s)", [tenant_id, from_id, wait_ms, SEAL_BATCH])
        sealed = cursor.fetchone()[0]
    if sealed and _has_streams(tenant_id):
        transaction.on_commit(partial(_wake_streams, tenant_id))
    return sealed


_streams_seen = {"at": 0.0, "tenants": frozenset()}


def _has_streams(tenant_id: int) -> bool:
    """Whether the tenant has SIEM streams, from a list refreshed every few seconds (the
    minutely sweep delivers anything a stale list missed)."""
    now = time.monotonic()
    if now - _streams_seen["at"] > 5:
        from compliance.models import AuditStream

        _streams_seen["tenants"] = frozenset(AuditStream.dangerously_all_tenants.values_list("tenant_id", flat=True))
        _streams_seen["at"] = now
    return tenant_id in _streams_seen["tenants"]


def forget_stream_list() -> None:
    _streams_seen["at"] = 0.0


def _wake_streams(tenant_id: int) -> None:
    try:
        from compliance.streams import schedule_for_tenant

        schedule_for_tenant(tenant_id)
    except Exception:  # the broker is down: the minutely sweep delivers later
        logger.warning("could not wake audit streams of tenant %s", tenant_id, exc_info=True)


def sealed_events(tenant_id: int):
    """The tenant's events that are in the chain (excludes events awaiting their seal)."""
    return AuditEvent.dangerously_all_tenants.filter(tenant_id=tenant_id, seq__isnull=False)


def head(tenant_id: int) -> dict | None:
    """The last sealed event of the tenant's chain, {"seq", "hash"}; None for an empty chain."""
    return sealed_events(tenant_id).order_by("-seq").values("seq", "hash").first()


def purge(*, tenant_id: int, up_to_seq: int | None = None, reason: str, actor: str,
          checkpoint: bool = True) -> int:
    """The one way rows leave tenant_audit (the trigger refuses every other DELETE).

    Deletes the tenant's rows up to `up_to_seq` (all when None) and, unless the tenant
    never existed (a rolled-back provisioning), writes a checkpoint holding the last
    deleted row's hash so the rest of the chain stays verifiable and sealing goes on
    from it. Runs under the chain lock, so no seal interleaves with the checkpoint.
    """
    from compliance.models import AuditCheckpoint

    with transaction.atomic():
        if checkpoint:
            seal_committed(tenant_id)  # every row the checkpoint covers must be in the chain
        else:
            with connection.cursor() as cursor:
                cursor.execute("SELECT levqor_audit_lock(%s, NULL)", [tenant_id])
        rows = AuditEvent.dangerously_all_tenants.filter(tenant_id=tenant_id)
        if up_to_seq is not None:
            rows = rows.filter(seq__lte=up_to_seq)
        elif checkpoint:  # events committed since the seal above stay: they are chained after the checkpoint
            rows = rows.filter(seq__isnull=False)
        last = rows.order_by("-seq").values("seq", "hash").first() if checkpoint else None
        with connection.cursor() as cursor:
            cursor.execute("SELECT set_config('levqor.audit_purge', 'on', true)")
        count, _ = rows.delete()
        with connection.cursor() as cursor:
            cursor.execute("SELECT set_config('levqor.audit_purge', 'off', true)")
        if last is not None:
            AuditCheckpoint.objects.create(tenant_id=tenant_id, seq=last["seq"], hash=last["hash"], purged_rows=count,
                                           reason=reason, actor=actor)
    return count


def verify_chain(tenant_id: int) -> tuple[bool, int | None]:
    """(intact, first broken seq). Seals what is committed first, then checks the chain
    from the latest purge checkpoint, if any."""
    from compliance.models import AuditCheckpoint

    seal_committed(tenant_id)
    checkpoint = AuditCheckpoint.objects.filter(tenant_id=tenant_id).order_by("-seq").first()
    prev = checkpoint.hash if checkpoint else GENESIS
    expected_seq = checkpoint.seq + 1 if checkpoint else 1
    for row in sealed_events(tenant_id).filter(seq__gte=expected_seq).order_by("seq").iterator():
        digest = content_hash(prev_hash=prev, tenant_id=row.tenant_id, seq=row.seq, event=row.event,
                              actor=row.actor, ts=row.ts, metadata=row.metadata_json)
        if row.seq != expected_seq or row.prev_hash != prev or row.hash != digest:
            return False, row.seq
        prev = row.hash
        expected_seq += 1
    return True, None
