"""Events written unchained in their writer's transaction and sealed into the chain after
commit: concurrent writers, rollbacks, the trigger's one allowed UPDATE, the sealers,
streams and purge checkpoints.

These tests commit (several connections must see each other's work), so they use tenant
ids of their own rather than provisioned tenants: the trail needs only the id.
"""
import itertools
import threading
import time
from contextlib import contextmanager, nullcontext
from functools import partial

import pytest
from django.db import connection, connections, transaction
from django.db.utils import DatabaseError

from compliance import audit, streams
from compliance.models import AuditEvent
from tests.compliance.receivers import Receiver

pytestmark = pytest.mark.django_db(transaction=True)
_ids = itertools.count(1)


@pytest.fixture
def tenant_id():
    return 10**12 + time.time_ns() % 10**9 * 100 + next(_ids)


def _events(tenant_id):
    return AuditEvent.dangerously_all_tenants.filter(tenant_id=tenant_id)


class _Thread(threading.Thread):
    """Work on a connection of its own; join() re-raises its error."""

    def __init__(self, work):
        super().__init__(daemon=True)
        self.work, self.error = work, None

    def run(self):
        try:
            self.work()
        except BaseException as exc:  # noqa: BLE001 - re-raised by join()
            self.error = exc
        finally:
            connections.close_all()

    def join(self, timeout=60):
        super().join(timeout)
        assert not self.is_alive(), "a thread hung"
        if self.error:
            raise self.error


def _in_threads(n, work):
    threads = [_Thread(partial(work, i)) for i in range(n)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()


@contextmanager
def _chain_held(tenant_id):
    """Another transaction holds the tenant's chain (it chained an event inline and has
    not committed) until the block ends; then it commits."""
    held, release = threading.Event(), threading.Event()

    def hold():
        with transaction.atomic():
            assert audit.record("config.changed", tenant_id=tenant_id, actor="holder").seq is not None
            held.set()
            release.wait(30)

    holder = _Thread(hold)
    holder.start()
    assert held.wait(30)
    try:
        yield
    finally:
        release.set()
        holder.join()


def _assert_one_gapless_chain(tenant_id, count):
    assert list(_events(tenant_id).order_by("seq").values_list("seq", flat=True)) == list(range(1, count + 1))
    assert audit.verify_chain(tenant_id) == (True, None)


def _left_unsealed(tenant_id, monkeypatch, n=1, actor="late"):
    """n committed events whose writers gave up waiting for the chain: no one sealed them."""
    monkeypatch.setattr(audit, "WAIT_MS", 1)
    with _chain_held(tenant_id):
        events = [audit.record("config.changed", tenant_id=tenant_id, actor=actor) for _ in range(n)]
    assert _events(tenant_id).filter(pk__in=[e.pk for e in events], seq__isnull=True).count() == n
    return events


def test_concurrent_writers_to_one_tenant_make_one_unforked_gapless_chain(tenant_id):
    writers, rounds = 8, 5
    inside = threading.Barrier(writers)

    def write(i):
        for r in range(rounds):
            with transaction.atomic():
                audit.record("config.changed", tenant_id=tenant_id, actor=f"w{i}", metadata={"round": r})
                inside.wait(30)  # all writers are in their transactions: at most one found the chain free

    _in_threads(writers, write)
    assert not _events(tenant_id).filter(seq__isnull=True).exists()  # each writer saw its event sealed
    _assert_one_gapless_chain(tenant_id, writers * rounds)
    events = list(_events(tenant_id).order_by("seq"))
    for i in range(writers):
        assert [e.metadata_json["round"] for e in events if e.actor == f"w{i}"] == list(range(rounds))


def _committed(tenant_id, actor):
    while not _events(tenant_id).filter(actor=actor).exists():
        time.sleep(0.01)


def test_a_writer_waits_its_turn_and_sees_its_event_sealed(tenant_id, monkeypatch):
    monkeypatch.setattr(audit, "WAIT_MS", 5000)
    done = threading.Event()
    writer = _Thread(lambda: (audit.record("config.changed", tenant_id=tenant_id, actor="writer"), done.set()))
    with _chain_held(tenant_id):
        writer.start()
        _committed(tenant_id, "writer")
        assert not done.is_set() and _events(tenant_id).get(actor="writer").seq is None  # waiting for the holder
    writer.join()
    assert done.is_set() and _events(tenant_id).get(actor="writer").seq == 2
    _assert_one_gapless_chain(tenant_id, 2)


def test_a_transactions_later_event_is_not_chained_ahead_of_its_unsealed_one(tenant_id, monkeypatch):
    monkeypatch.setattr(audit, "WAIT_MS", 5000)
    monkeypatch.setattr(audit, "CONTENDED_SECONDS", 0)  # let record() try the chain for the second event
    with transaction.atomic():
        with _chain_held(tenant_id):
            first = audit.record("config.changed", tenant_id=tenant_id, actor="me", metadata={"n": 1})
            other = _Thread(lambda: audit.record("config.changed", tenant_id=tenant_id, actor="other"))
            other.start()
            _committed(tenant_id, "other")  # and now waiting for the chain
        other.join()  # sealed its event after the holder's; ours is not committed yet
        assert first.seq is None and _events(tenant_id).get(actor="other").seq == 2
        second = audit.record("config.changed", tenant_id=tenant_id, actor="me", metadata={"n": 2})
        assert second.seq is None  # the chain is free, but chaining now would put it ahead of `first`
    mine = list(_events(tenant_id).filter(actor="me").order_by("seq").values_list("seq", "metadata_json"))
    assert mine == [(3, {"n": 1}), (4, {"n": 2})]  # sealed after commit, in the transaction's order
    _assert_one_gapless_chain(tenant_id, 4)


@pytest.mark.parametrize("chain", ["free", "held"])
def test_a_rolled_back_transaction_leaves_no_event_sealed_or_not(tenant_id, chain):
    audit.record("config.changed", tenant_id=tenant_id, actor="before")
    with _chain_held(tenant_id) if chain == "held" else nullcontext():
        with pytest.raises(RuntimeError), transaction.atomic():
            event = audit.record("key.created", tenant_id=tenant_id, actor="rolled-back")
            assert (event.seq is None) == (chain == "held")
            raise RuntimeError("the change it records failed")
    assert not _events(tenant_id).filter(actor="rolled-back").exists()
    audit.record("config.changed", tenant_id=tenant_id, actor="after")
    _assert_one_gapless_chain(tenant_id, 3 if chain == "held" else 2)


def _refused(sql, params):
    with pytest.raises(DatabaseError, match="append-only|audit_sealed_or_waiting"):
        with transaction.atomic(), connection.cursor() as cursor:
            cursor.execute(sql, params)


def test_the_database_allows_sealing_and_nothing_else(tenant_id, monkeypatch):
    sealed = audit.record("config.changed", tenant_id=tenant_id, actor="sealed")
    (unsealed,) = _left_unsealed(tenant_id, monkeypatch)
    seal = "UPDATE tenant_audit SET seq = %s, prev_hash = %s, hash = %s, content_to_seal = NULL"
    for sql, params in [
        # A sealed row never changes, chain columns included, and is never deleted.
        ("UPDATE tenant_audit SET actor = 'x' WHERE id = %s", [sealed.pk]),
        ("UPDATE tenant_audit SET seq = NULL, prev_hash = NULL, hash = NULL WHERE id = %s", [sealed.pk]),
        (seal + " WHERE id = %s", [9, "0" * 64, "f" * 64, sealed.pk]),
        ("DELETE FROM tenant_audit WHERE id = %s", [sealed.pk]),
        # An unsealed row's content never changes; it is sealed whole or not at all.
        ("UPDATE tenant_audit SET metadata_json = '{\"role\": \"owner\"}' WHERE id = %s", [unsealed.pk]),
        ("UPDATE tenant_audit SET content_to_seal = 'x' WHERE id = %s", [unsealed.pk]),
        (seal + ", actor = 'x' WHERE id = %s", [3, "a" * 64, "b" * 64, unsealed.pk]),
        ("UPDATE tenant_audit SET seq = 3 WHERE id = %s", [unsealed.pk]),
        ("UPDATE tenant_audit SET seq = 3, prev_hash = %s, hash = %s WHERE id = %s", ["a" * 64, "b" * 64, unsealed.pk]),
        ("DELETE FROM tenant_audit WHERE id = %s", [unsealed.pk]),
        # Nor does an event enter half sealed.
        ("INSERT INTO tenant_audit (tenant_id, seq, event, actor, ts, user_agent, metadata_json) "
         "VALUES (%s, 9, 'config.changed', 'x', now(), '', '{}')", [tenant_id]),
    ]:
        _refused(sql, params)
    assert _events(tenant_id).get(pk=sealed.pk).hash == sealed.hash
    assert _events(tenant_id).get(pk=unsealed.pk).seq is None
    with connection.cursor() as cursor:  # the one change allowed: the row sealed, its content as it was
        cursor.execute(seal + " WHERE id = %s", [3, "a" * 64, "b" * 64, unsealed.pk])
    assert audit.verify_chain(tenant_id) == (False, 3)  # a seal forged that way is a broken link


@pytest.mark.parametrize("path", ["chained at once", "sealed after commit"])
def test_hashes_computed_in_sql_are_the_ones_verify_recomputes(tenant_id, monkeypatch, path):
    metadata = {"name": "Zoë ☃ 𝄞 \u2028", "quote": "\"'\\</", "n": 1.5, "big": 10**20, "none": None,
                "nested": {"b": [1, "x", {"z": True}], "a": {}}, "ünïcode-kéy": "ok"}
    if path == "sealed after commit":
        monkeypatch.setattr(audit, "WAIT_MS", 1)
        with _chain_held(tenant_id):
            assert audit.record("config.changed", tenant_id=tenant_id, actor="Åsa ☃", metadata=metadata).seq is None
        audit.seal_pending()
    else:
        assert audit.record("config.changed", tenant_id=tenant_id, actor="Åsa ☃", metadata=metadata).seq == 1
    assert not _events(tenant_id).filter(seq__isnull=True).exists()
    assert audit.verify_chain(tenant_id) == (True, None)


def test_the_next_writer_takes_along_events_a_writer_left_unsealed(tenant_id, monkeypatch):
    _left_unsealed(tenant_id, monkeypatch, n=2)
    audit.record("config.changed", tenant_id=tenant_id, actor="next")
    assert not _events(tenant_id).filter(seq__isnull=True).exists()
    _assert_one_gapless_chain(tenant_id, 4)


def test_the_sealers_are_idempotent_and_safe_to_run_concurrently(tenant_id, monkeypatch):
    monkeypatch.setattr(audit, "WAIT_MS", 1)
    with _chain_held(tenant_id):
        _in_threads(6, lambda i: [audit.record("config.changed", tenant_id=tenant_id, actor=f"w{i}")
                                  for _ in range(5)])
    assert _events(tenant_id).filter(seq__isnull=True).count() == 30
    _in_threads(6, lambda i: audit.seal_pending() if i % 2 else audit.seal_committed(tenant_id))
    _assert_one_gapless_chain(tenant_id, 31)
    chain = list(_events(tenant_id).order_by("seq").values_list("id", "hash"))
    assert audit.seal_pending() == {}
    audit.seal_committed(tenant_id)
    assert list(_events(tenant_id).order_by("seq").values_list("id", "hash")) == chain


def test_tampering_with_an_event_a_sealer_chained_is_caught(tenant_id, monkeypatch):
    _left_unsealed(tenant_id, monkeypatch, n=3)
    audit.seal_pending()
    victim = _events(tenant_id).filter(actor="late").order_by("seq")[1]
    with connection.cursor() as cursor:
        cursor.execute("ALTER TABLE tenant_audit DISABLE TRIGGER tenant_audit_append_only")
        cursor.execute("UPDATE tenant_audit SET metadata_json = '{\"x\": 1}' WHERE id = %s", [victim.pk])
        cursor.execute("ALTER TABLE tenant_audit ENABLE TRIGGER tenant_audit_append_only")
    assert audit.verify_chain(tenant_id) == (False, victim.seq)


def test_a_stream_delivers_events_sealed_late_in_order_and_once(tenant_id, monkeypatch, settings):
    settings.LEVQOR_OUTBOUND_ALLOW_HOSTS = ["127.0.0.1"]
    woken = []
    monkeypatch.setattr(audit, "_wake_streams", woken.append)
    receiver = Receiver()
    try:
        stream = streams.stream_create(tenant_id=tenant_id, name="siem", kind="webhook", url=receiver.url,
                                       secret="s3cret-token-123", actor="test")
        _left_unsealed(tenant_id, monkeypatch, n=3)
        while streams.deliver(stream.pk)["more"]:
            pass
        assert [e["seq"] for e in receiver.events("webhook")] == [1, 2]  # only the chain so far
        woken.clear()
        audit.seal_pending()
        assert woken == [tenant_id]  # the seal's commit wakes the tenant's streams
        while streams.deliver(stream.pk)["more"]:
            pass
        assert [e["id"] for e in receiver.events("webhook")] == [f"{tenant_id}-{seq}" for seq in range(1, 6)]
    finally:
        receiver.close()


def test_after_a_purge_of_every_row_the_chain_goes_on_from_the_checkpoint(tenant_id):
    for _ in range(3):
        audit.record("config.changed", tenant_id=tenant_id, actor="old")
    assert audit.purge(tenant_id=tenant_id, reason="retention", actor="test") == 3
    assert audit.record("config.changed", tenant_id=tenant_id, actor="new").seq == 4
    assert audit.verify_chain(tenant_id) == (True, None)
