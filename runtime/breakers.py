"""Circuit breakers around every outbound dependency: Stripe, Notion, each SIEM stream
and each region's replica.

    with breakers.guard("stripe"):                 # or @breakers.guard("stripe")
        stripe_client.v1.customers.create(...)

    with breakers.guard(f"siem:{stream.pk}") as call:
        response = outbound.post(...)
        if response.status_code >= 500:
            call.failed(f"HTTP {response.status_code}")   # answered, but as a failure

Names: `stripe`, `notion`, `siem:<stream id>`, `replica:<region>`, `webhook:alerts` (the staff alert webhook).

States. **closed**: calls go through; an exception out of the block (other than the
`ignore` types: a 4xx that is the caller's fault means the dependency answered) or
`call.failed()` counts a failure, a success resets the count. LEVQOR_BREAKER_FAILURES
consecutive failures, the first of them at most LEVQOR_BREAKER_WINDOW_SECONDS ago,
**open** it: calls fail fast with `BreakerOpen` (a 503 `dependency_unavailable` with
Retry-After) without touching the dependency. After LEVQOR_BREAKER_COOLDOWN_SECONDS
the next call is let through as the one probe (**half_open**; others still fail fast);
its success closes the breaker, its failure opens it for another cool-down.
`open(name, reason=...)` (staff, auto-heal) opens it until `close(name)` or a
successful `probe(name)`: the cool-down does not half-open a breaker opened by hand.

Where state lives. Redis holds the live state (a hash per breaker, changed only by Lua
scripts, so concurrent workers agree); every transition is also appended to a Redis
journal in the same script and flushed into PostgreSQL (`Breaker`: the current state
per name, `BreakerEvent`: the history) right after the call, or after the caller's
transaction commits; a transaction that rolls back leaves the entry in the journal for
the next flush (the `breakers-flush` beat task runs it every 30 s). Opening raises a
`breaker.opened` staff alert; closing resolves it.

When Redis itself is down, breakers let every call through (they must never make an
outage worse) and say so in the log.
"""
from __future__ import annotations

import contextlib
import json
import logging
import time
import uuid
from collections.abc import Callable

import redis
from django.conf import settings
from django.db import connection, transaction
from django.utils import timezone

from compliance.outbound import CircuitOpen
from levqor.redis import client as redis_client

logger = logging.getLogger(__name__)
PREFIX = "levqor:breaker:"
JOURNAL = "levqor:breaker-journal"
FLUSH_LOCK = "levqor:breaker-journal:lock"
FLUSH_BATCH = 500
CLOSED, OPEN, HALF_OPEN = "closed", "open", "half_open"


class BreakerOpen(CircuitOpen):
    """The breaker of `name` is open (or half-open with its probe in flight)."""


# --- the scripts: every change of a breaker's hash, and its journal entry, in one step -------

_JOURNAL_ENTRY = """
local function journal(from_state, to_state, failures, reason, actor)
  redis.call('RPUSH', KEYS[3], cjson.encode({uid=ARGV[1], name=ARGV[2], from_state=from_state, to_state=to_state,
    failures=failures, reason=reason, actor=actor, at=tonumber(ARGV[3])}))
end
local function failures_now() return tonumber(redis.call('HGET', KEYS[1], 'failures') or '0') end
"""

# KEYS: hash, probe token, journal. ARGV: uid, name, now, cooldown.
_ADMIT = _JOURNAL_ENTRY + """
local state = redis.call('HGET', KEYS[1], 'state')
if (not state) or state == 'closed' then return {'pass', '0'} end
local cooldown_ms = math.floor(tonumber(ARGV[4]) * 1000) + 1
if state == 'open' then
  if redis.call('HGET', KEYS[1], 'forced') == '1' then return {'open', '-1'} end
  local wait = tonumber(redis.call('HGET', KEYS[1], 'opened_at') or '0') + tonumber(ARGV[4]) - tonumber(ARGV[3])
  if wait > 0 then return {'open', tostring(wait)} end
  redis.call('HSET', KEYS[1], 'state', 'half_open', 'changed_at', ARGV[3])
  redis.call('SET', KEYS[2], ARGV[1], 'PX', cooldown_ms)
  journal('open', 'half_open', failures_now(), 'cool-down over: one probe call let through', 'system')
  return {'probe', '0'}
end
if redis.call('SET', KEYS[2], ARGV[1], 'NX', 'PX', cooldown_ms) then return {'probe', '0'} end
return {'half_open', tostring(redis.call('PTTL', KEYS[2]) / 1000)}
"""

# KEYS: hash, probe token, journal. ARGV: uid, name, now, window seconds.
_SUCCESS = _JOURNAL_ENTRY + """
local state = redis.call('HGET', KEYS[1], 'state') or 'closed'
if state == 'closed' then
  redis.call('HDEL', KEYS[1], 'failures', 'first_failure_at')
  return 'closed'
end
if state ~= 'half_open' then return state end
redis.call('HSET', KEYS[1], 'state', 'closed', 'failures', '0', 'changed_at', ARGV[3], 'forced', '0', 'reason', '')
redis.call('HDEL', KEYS[1], 'first_failure_at', 'opened_at')
redis.call('DEL', KEYS[2])
redis.call('EXPIRE', KEYS[1], math.floor(tonumber(ARGV[4])) + 1)
journal('half_open', 'closed', 0, 'a call succeeded', 'system')
return 'closed_now'
"""

# KEYS: hash, probe token, journal. ARGV: uid, name, now, window, threshold, reason.
_FAILURE = _JOURNAL_ENTRY + """
local state = redis.call('HGET', KEYS[1], 'state') or 'closed'
local now = tonumber(ARGV[3])
if state == 'open' then return 'open' end
local failures = failures_now()
if state == 'half_open' then
  redis.call('HSET', KEYS[1], 'state', 'open', 'opened_at', ARGV[3], 'changed_at', ARGV[3], 'forced', '0',
             'reason', ARGV[6], 'failures', tostring(failures + 1))
  redis.call('DEL', KEYS[2])
  journal('half_open', 'open', failures + 1, 'the probe failed: ' .. ARGV[6], 'system')
  return 'opened'
end
local first = tonumber(redis.call('HGET', KEYS[1], 'first_failure_at') or '0')
if failures == 0 or now - first > tonumber(ARGV[4]) then failures = 1; first = now else failures = failures + 1 end
redis.call('HSET', KEYS[1], 'failures', tostring(failures), 'first_failure_at', tostring(first), 'last_error', ARGV[6])
if failures >= tonumber(ARGV[5]) then
  redis.call('HSET', KEYS[1], 'state', 'open', 'opened_at', ARGV[3], 'changed_at', ARGV[3], 'forced', '0',
             'reason', ARGV[6])
  redis.call('PERSIST', KEYS[1])
  journal('closed', 'open', failures, failures .. ' consecutive failures; last: ' .. ARGV[6], 'system')
  return 'opened'
end
redis.call('EXPIRE', KEYS[1], math.floor(tonumber(ARGV[4])) + 1)
return 'counted'
"""

# KEYS: hash, probe token, journal. ARGV: uid, name, now, reason, actor.
_FORCE_OPEN = _JOURNAL_ENTRY + """
local state = redis.call('HGET', KEYS[1], 'state') or 'closed'
if state == 'open' and redis.call('HGET', KEYS[1], 'forced') == '1' then return state end
redis.call('HSET', KEYS[1], 'state', 'open', 'forced', '1', 'opened_at', ARGV[3], 'changed_at', ARGV[3],
           'reason', ARGV[4])
redis.call('PERSIST', KEYS[1])
redis.call('DEL', KEYS[2])
journal(state, 'open', failures_now(), ARGV[4], ARGV[5])
return state
"""

# KEYS: hash, probe token, journal. ARGV: uid, name, now, reason, actor, window.
_CLOSE = _JOURNAL_ENTRY + """
local state = redis.call('HGET', KEYS[1], 'state') or 'closed'
if state == 'closed' then return state end
redis.call('HSET', KEYS[1], 'state', 'closed', 'failures', '0', 'changed_at', ARGV[3], 'forced', '0', 'reason', '')
redis.call('HDEL', KEYS[1], 'first_failure_at', 'opened_at')
redis.call('DEL', KEYS[2])
redis.call('EXPIRE', KEYS[1], math.floor(tonumber(ARGV[6])) + 1)
journal(state, 'closed', 0, ARGV[4], ARGV[5])
return state
"""


_registered: dict[tuple[int, str], object] = {}


def _run(script: str, name: str, *args):
    r = redis_client()
    runner = _registered.get((id(r), script))
    if runner is None:
        runner = _registered[(id(r), script)] = r.register_script(script)
    keys = [PREFIX + name, PREFIX + name + ":probe", JOURNAL]
    return runner(keys=keys, args=[uuid.uuid4().hex, name, repr(time.time()), *args])


def _text(value) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _failures_setting() -> int:
    return max(1, int(settings.LEVQOR_BREAKER_FAILURES))


# --- the guard -------------------------------------------------------------------------------


class guard(contextlib.ContextDecorator):
    """Guard one call to `name` (module docstring). Exceptions of the `ignore` types
    count as the dependency answering (a success); they still propagate."""

    def __init__(self, name: str, *, ignore: tuple[type[BaseException], ...] = ()):
        self.name = name
        self.ignore = tuple(ignore)
        self.is_probe = False
        self._failure: str | None = None

    def _recreate_cm(self):  # each decorated call gets its own guard
        return guard(self.name, ignore=self.ignore)

    def failed(self, reason: str) -> None:
        """The call returned, but with an answer that means the dependency is failing."""
        self._failure = reason[:300] or "failed"

    def __enter__(self) -> guard:
        self._failure, self.is_probe = None, False
        try:
            verdict, wait = (_text(v) for v in _run(_ADMIT, self.name, settings.LEVQOR_BREAKER_COOLDOWN_SECONDS))
        except redis.RedisError:
            logger.warning("breaker %s: Redis unavailable, letting the call through", self.name)
            return self
        if verdict == "probe":
            self.is_probe = True
            _after_transition()
        elif verdict in (OPEN, HALF_OPEN):
            raise _open_error(self.name, float(wait))
        return self

    def __exit__(self, exc_type, exc, tb) -> bool:
        if exc_type is not None and issubclass(exc_type, BreakerOpen):
            return False
        if exc_type is not None and issubclass(exc_type, Exception) and not issubclass(exc_type, self.ignore):
            _record_failure(self.name, f"{exc_type.__name__}: {exc}")
        elif self._failure is not None:
            _record_failure(self.name, self._failure)
        elif exc_type is None or issubclass(exc_type, self.ignore):
            _record_success(self.name)
        return False


def _open_error(name: str, wait: float) -> BreakerOpen:
    if wait < 0:
        return BreakerOpen(name, f"{name} is unavailable: its circuit breaker was opened and stays open until "
                                 "it is closed or a probe succeeds")
    return BreakerOpen(name, f"{name} is unavailable: its circuit breaker is open after repeated failures; "
                             f"retry in {max(1, round(wait))} s", retry_after=wait)


def _record_failure(name: str, reason: str) -> None:
    try:
        outcome = _text(_run(_FAILURE, name, settings.LEVQOR_BREAKER_WINDOW_SECONDS, _failures_setting(),
                             reason[:300]))
    except redis.RedisError:
        logger.warning("breaker %s: Redis unavailable, failure not counted", name)
        return
    if outcome == "opened":
        logger.warning("breaker %s opened: %s", name, reason)
        _after_transition()


def _record_success(name: str) -> None:
    try:
        outcome = _text(_run(_SUCCESS, name, settings.LEVQOR_BREAKER_WINDOW_SECONDS))
    except redis.RedisError:
        return
    if outcome == "closed_now":
        logger.info("breaker %s closed: a call succeeded", name)
        _after_transition()


# --- by hand (staff admin, auto-heal) and reading --------------------------------------------


def open(name: str, *, reason: str = "opened by hand", actor: str = "system") -> str:  # noqa: A001 - the interface
    """Open the breaker until `close` or a successful `probe`. Returns the state before."""
    before = _text(_run(_FORCE_OPEN, name, reason[:300], actor[:200]))
    _after_transition()
    return before


def close(name: str, *, actor: str = "system", reason: str = "closed by hand") -> str:
    """Close the breaker (the failure count starts afresh). Returns the state before."""
    before = _text(_run(_CLOSE, name, reason[:300], actor[:200], settings.LEVQOR_BREAKER_WINDOW_SECONDS))
    _after_transition()
    return before


def snapshot(name: str) -> dict:
    """The live state of one breaker: state, failures, reason, opened_at, forced, retry_after."""
    try:
        raw = {_text(k): _text(v) for k, v in redis_client().hgetall(PREFIX + name).items()}
    except redis.RedisError:
        return {"state": CLOSED, "failures": 0, "reason": "Redis unavailable", "opened_at": None, "forced": False,
                "retry_after": None}
    state = raw.get("state", CLOSED)
    forced = raw.get("forced") == "1"
    opened_at = float(raw["opened_at"]) if raw.get("opened_at") else None
    retry_after = None
    if state == OPEN and not forced and opened_at is not None:
        retry_after = opened_at + settings.LEVQOR_BREAKER_COOLDOWN_SECONDS - time.time()
        if retry_after <= 0:
            state, retry_after = HALF_OPEN, 0.0  # the next call is the probe
    return {"state": state, "failures": int(raw.get("failures") or 0), "reason": raw.get("reason") or
            raw.get("last_error", ""), "opened_at": opened_at, "forced": forced, "retry_after": retry_after}


def state(name: str) -> str:
    """"closed", "open" or "half_open" (an open breaker whose cool-down is over is half-open:
    the next call is its probe)."""
    return snapshot(name)["state"]


# --- probes ----------------------------------------------------------------------------------

_probes: dict[str, Callable[[str], bool]] = {}


def register_probe(prefix: str, fn: Callable[[str], bool]) -> None:
    """`fn(name)` checks the dependency without going through its breaker: True when it
    answers as it should. `prefix` is a name (`stripe`) or the part before the colon
    (`siem` serves `siem:12`)."""
    _probes[prefix] = fn


def probe_for(name: str) -> Callable[[str], bool] | None:
    matches = [p for p in _probes if name == p or name.startswith(p + ":")]
    return _probes[max(matches, key=len)] if matches else None


def probe(name: str) -> bool:
    """Run the registered probe of `name`. Success closes the breaker; failure counts as a
    failed call (it re-opens a half-open breaker, and opens a closed one at the threshold).
    Raises LookupError when no probe is registered for it."""
    fn = probe_for(name)
    if fn is None:
        raise LookupError(f"no probe is registered for {name!r}")
    try:
        healthy = bool(fn(name))
        reason = "the probe found it unhealthy"
    except Exception as exc:  # a probe reports, it does not raise
        healthy, reason = False, f"probe raised {type(exc).__name__}: {exc}"
    if healthy:
        if state(name) != CLOSED:
            close(name, actor="system:probe", reason="the probe succeeded")
        else:
            _record_success(name)
    elif snapshot(name)["state"] != OPEN:
        _record_failure(name, reason)
    return healthy


# --- the PostgreSQL record -------------------------------------------------------------------


def _after_transition() -> None:
    """Flush the journal now, or when the caller's transaction commits."""
    if connection.in_atomic_block:
        transaction.on_commit(_flush_quietly)
    else:
        _flush_quietly()


def _flush_quietly() -> None:
    """The caller's call must not fail because the record could not be written: the
    entries stay in the journal for the next flush."""
    try:
        flush_journal()
    except Exception:
        logger.exception("breakers: could not flush the transition journal; the beat task retries")


def flush_journal() -> int:
    """Write the journal's transitions into Breaker/BreakerEvent, raise or resolve the
    alerts, then drop them from the journal. One flusher at a time. Returns how many."""
    from runtime.models import BreakerEvent

    r = redis_client()
    token = uuid.uuid4().hex
    try:
        if not r.set(FLUSH_LOCK, token, nx=True, ex=30):
            return 0
        raw = r.lrange(JOURNAL, 0, FLUSH_BATCH - 1)
    except redis.RedisError:
        return 0
    try:
        entries = [json.loads(item) for item in raw]
        uids = [e["uid"] for e in entries]
        with transaction.atomic():
            fresh = set(uids) - set(BreakerEvent.objects.filter(uid__in=uids).values_list("uid", flat=True))
            for entry in entries:
                if entry["uid"] in fresh:
                    _apply(entry)
        r.ltrim(JOURNAL, len(raw), -1)
    finally:
        with contextlib.suppress(redis.RedisError):
            if _text(r.get(FLUSH_LOCK) or b"") == token:
                r.delete(FLUSH_LOCK)
    return len(raw)


def _apply(entry: dict) -> None:
    from datetime import datetime, timezone as dt_timezone

    from compliance.alerts import alert_raise
    from compliance.models import Alert
    from runtime.models import Breaker, BreakerEvent

    at = datetime.fromtimestamp(entry["at"], tz=dt_timezone.utc)
    fields = {"failures": max(0, int(entry.get("failures") or 0)), "reason": str(entry.get("reason") or "")[:500],
              "actor": str(entry.get("actor") or "")[:200]}
    BreakerEvent.objects.create(uid=entry["uid"], name=entry["name"], from_state=entry["from_state"],
                                to_state=entry["to_state"], at=at, **fields)
    row = Breaker.objects.select_for_update().filter(name=entry["name"]).first()
    if row is None:
        Breaker.objects.create(name=entry["name"], state=entry["to_state"], changed_at=at, **fields)
    elif row.changed_at <= at:
        Breaker.objects.filter(pk=row.pk).update(state=entry["to_state"], changed_at=at, **fields)
    if entry["to_state"] == OPEN:
        alert_raise(kind="breaker.opened", audience=Alert.Audience.STAFF, severity="warning",
                    message=f"Circuit breaker {entry['name']} opened: {fields['reason']}. Calls to it fail fast "
                            "until it closes (a probe after the cool-down, or staff in the admin).",
                    metadata={"breaker": entry["name"], "failures": fields["failures"], "actor": fields["actor"]},
                    dedupe_key=entry["name"])
    elif entry["to_state"] == CLOSED:
        Alert.objects.filter(kind="breaker.opened", dedupe_key=entry["name"], resolved_at__isnull=True).update(
            resolved_at=timezone.now())


def forget(name: str | None = None) -> None:
    """Drop the live state of one breaker, or of all (tests). The PostgreSQL record stays."""
    r = redis_client()
    if name is not None:
        r.delete(PREFIX + name, PREFIX + name + ":probe")
        return
    for key in r.scan_iter(PREFIX + "*"):
        r.delete(key)
    r.delete(JOURNAL, FLUSH_LOCK)
