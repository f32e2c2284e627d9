"""Events are written unchained and sealed into the hash chain after commit (compliance.audit).

- `seq`, `prev_hash` and `hash` may be NULL: the event is committed, not yet sealed.
  Until it is, `content_to_seal` holds its content as the hash covers it
  (compliance.audit.hashed_content), so sealing runs in SQL alone; sealing clears it.
  A check constraint (validated in 0008) keeps every row either sealed or waiting whole.
- The append-only trigger allows exactly one UPDATE: sealing, i.e. the row goes from
  unsealed to sealed, once, and every other column (compared as a whole row, so columns
  added later are covered too) stays as it was. Every other UPDATE and every DELETE
  outside audit.purge() is still refused; a sealed row can never change.
- levqor_audit_head_of(tenant): where the chain goes on: the last sealed event, else the
  last purge checkpoint (so a purge of every row does not restart the chain at 1), else
  seq 0 and the genesis hash.
- levqor_audit_lock(tenant, wait ms): the tenant's chain lock, for this transaction:
  tried (0), waited for up to `wait ms`, or as long as it takes (NULL); false if not had.
- levqor_audit_append(tenant, chain, own ids, event...): record()'s one round trip. It
  chains the event at once if the caller allows it (`chain`), no event of the tenant
  waits to be sealed (none after the head, none of this transaction's own: `own ids`)
  and the chain lock is free, which it then keeps until commit; otherwise it inserts the
  event unsealed, and says from which id the writer's seal should start (`seal_from`:
  its event, or an earlier one found waiting, e.g. left by a writer that gave up).
- levqor_audit_seal(tenant, from id, wait ms, limit): takes the chain lock, then seals
  the tenant's unsealed events from that id on, in id order; how many, NULL if the lock
  was not had. Run on its own (autocommit) it holds the lock for that statement and its
  commit only.
- Both compute an event's hash as compliance.audit.content_hash() does, which
  audit_verify recomputes for every event: the SHA-256 of the JSON list
  [prev_hash, tenant, seq, event, actor, ts, metadata], i.e. of
  '["<prev_hash>",<tenant>,<seq>,' || content || ']'.
- levqor_audit_head (0006) is replaced by these.

Every lookup of unsealed events is bounded by an id (or by the head's id): the rows that
sealing replaced stay in the `audit_unsealed` index (0008) as dead entries until VACUUM
whenever any transaction in the cluster is old, and an unbounded scan walks all of them.
"""
from django.db import migrations, models

FUNCTIONS = """
CREATE OR REPLACE FUNCTION levqor_audit_append_only() RETURNS trigger AS $$
DECLARE
  unsealed public.tenant_audit;
BEGIN
  IF TG_OP = 'DELETE' AND current_setting('levqor.audit_purge', true) = 'on' THEN
    RETURN OLD;
  END IF;
  IF TG_OP = 'UPDATE' AND OLD.seq IS NULL AND NEW.seq IS NOT NULL THEN
    -- Sealing: with its chain columns cleared and its content_to_seal put back, the new
    -- row must equal the old one in every column (the check constraint makes the old row
    -- wholly unsealed and the new one wholly sealed; a column without an equality
    -- operator makes this fail: closed).
    unsealed := NEW;
    unsealed.seq := NULL;
    unsealed.prev_hash := NULL;
    unsealed.hash := NULL;
    unsealed.content_to_seal := OLD.content_to_seal;
    IF unsealed IS NOT DISTINCT FROM OLD THEN
      RETURN NEW;
    END IF;
  END IF;
  RAISE EXCEPTION 'tenant_audit is append-only: % refused', TG_OP USING ERRCODE = 'insufficient_privilege';
END
$$ LANGUAGE plpgsql;

ALTER TABLE tenant_audit ADD CONSTRAINT audit_sealed_or_waiting CHECK (
  (seq IS NOT NULL AND prev_hash IS NOT NULL AND hash IS NOT NULL AND content_to_seal IS NULL)
  OR (seq IS NULL AND prev_hash IS NULL AND hash IS NULL AND content_to_seal IS NOT NULL)) NOT VALID;

DROP FUNCTION IF EXISTS levqor_audit_head(bigint);

CREATE OR REPLACE FUNCTION levqor_audit_head_of(p_tenant bigint) RETURNS TABLE(seq bigint, hash varchar) AS $$
  SELECT h.seq, h.hash FROM (
    (SELECT a.seq::bigint AS seq, a.hash FROM public.tenant_audit a
     WHERE a.tenant_id = p_tenant AND a.seq IS NOT NULL ORDER BY a.seq DESC LIMIT 1)
    UNION ALL
    (SELECT c.seq::bigint, c.hash FROM public.tenant_audit_checkpoints c
     WHERE c.tenant_id = p_tenant ORDER BY c.seq DESC LIMIT 1)
    UNION ALL
    SELECT 0::bigint, repeat('0', 64)::varchar
  ) h ORDER BY h.seq DESC LIMIT 1
$$ LANGUAGE sql STABLE;

CREATE OR REPLACE FUNCTION levqor_audit_chain_hash(p_prev text, p_tenant bigint, p_seq bigint, p_content text)
RETURNS varchar AS $$
  SELECT encode(sha256(convert_to(format('["%s",%s,%s,%s]', p_prev, p_tenant, p_seq, p_content), 'UTF8')), 'hex')
$$ LANGUAGE sql IMMUTABLE;

CREATE OR REPLACE FUNCTION levqor_audit_lock(p_tenant bigint, p_wait_ms integer) RETURNS boolean AS $$
DECLARE
  previous text := current_setting('lock_timeout');
BEGIN
  IF p_wait_ms = 0 THEN
    RETURN pg_try_advisory_xact_lock(7301, (p_tenant % 2147483647)::int);
  END IF;
  IF p_wait_ms IS NULL THEN
    PERFORM pg_advisory_xact_lock(7301, (p_tenant % 2147483647)::int);
    RETURN true;
  END IF;
  PERFORM set_config('lock_timeout', p_wait_ms || 'ms', true);
  BEGIN
    PERFORM pg_advisory_xact_lock(7301, (p_tenant % 2147483647)::int);
  EXCEPTION WHEN lock_not_available THEN
    PERFORM set_config('lock_timeout', previous, true);
    RETURN false;
  END;
  PERFORM set_config('lock_timeout', previous, true);
  RETURN true;
END
$$ LANGUAGE plpgsql;

CREATE OR REPLACE FUNCTION levqor_audit_append(p_tenant bigint, p_chain boolean, p_own bigint[], p_event varchar,
                                               p_actor varchar, p_ts timestamptz, p_ip inet, p_user_agent varchar,
                                               p_metadata jsonb, p_content text)
RETURNS TABLE(id bigint, seq bigint, prev_hash varchar, hash varchar, seal_from bigint, xid text) AS $$
DECLARE
  head_id bigint;
  head record;
  waiting_from bigint;
  new_seq bigint;
  new_prev varchar;
  new_hash varchar;
BEGIN
  SELECT a.id INTO head_id FROM public.tenant_audit a
  WHERE a.tenant_id = p_tenant AND a.seq IS NOT NULL ORDER BY a.seq DESC LIMIT 1;
  SELECT min(a.id) INTO waiting_from FROM public.tenant_audit a
  WHERE a.tenant_id = p_tenant AND a.seq IS NULL AND a.id > coalesce(head_id, 0);
  -- Nested IFs: the lock must be tried only when the event may be chained now.
  IF p_chain AND waiting_from IS NULL THEN
    IF cardinality(p_own) = 0 OR NOT EXISTS (SELECT 1 FROM public.tenant_audit a
                                             WHERE a.id = ANY(p_own) AND a.seq IS NULL) THEN
      IF levqor_audit_lock(p_tenant, 0) THEN
        SELECT * INTO head FROM levqor_audit_head_of(p_tenant);
        new_seq := head.seq + 1;
        new_prev := head.hash;
        new_hash := levqor_audit_chain_hash(new_prev, p_tenant, new_seq, p_content);
      END IF;
    END IF;
  END IF;
  RETURN QUERY
    INSERT INTO public.tenant_audit AS a (tenant_id, seq, event, actor, ts, ip, user_agent, metadata_json, prev_hash,
                                          hash, content_to_seal)
    VALUES (p_tenant, new_seq, p_event, p_actor, p_ts, p_ip, p_user_agent, p_metadata, new_prev, new_hash,
            CASE WHEN new_seq IS NULL THEN p_content END)
    RETURNING a.id, a.seq::bigint, a.prev_hash, a.hash, least(a.id, waiting_from), pg_current_xact_id()::text;
END
$$ LANGUAGE plpgsql;

CREATE OR REPLACE FUNCTION levqor_audit_seal(p_tenant bigint, p_from_id bigint, p_wait_ms integer, p_limit integer)
RETURNS integer AS $$
DECLARE
  head record;
  next_seq bigint;
  prev varchar;
  digest varchar;
  sealed integer := 0;
  event record;
BEGIN
  IF NOT levqor_audit_lock(p_tenant, p_wait_ms) THEN
    RETURN NULL;
  END IF;
  SELECT * INTO head FROM levqor_audit_head_of(p_tenant);
  next_seq := head.seq;
  prev := head.hash;
  FOR event IN SELECT a.id, a.content_to_seal FROM public.tenant_audit a
               WHERE a.tenant_id = p_tenant AND a.seq IS NULL AND a.id >= p_from_id ORDER BY a.id LIMIT p_limit LOOP
    next_seq := next_seq + 1;
    digest := levqor_audit_chain_hash(prev, p_tenant, next_seq, event.content_to_seal);
    -- One update per event, found by its id: a set-based UPDATE may be planned over the
    -- tenant's whole audit_unsealed range, dead entries included.
    UPDATE public.tenant_audit a SET seq = next_seq, prev_hash = prev, hash = digest, content_to_seal = NULL
    WHERE a.id = event.id AND a.tenant_id = p_tenant AND a.seq IS NULL;
    prev := digest;
    sealed := sealed + 1;
  END LOOP;
  RETURN sealed;
END
$$ LANGUAGE plpgsql;
"""

BACKWARD = """
DROP FUNCTION IF EXISTS levqor_audit_seal(bigint, bigint, integer, integer);
DROP FUNCTION IF EXISTS levqor_audit_append(bigint, boolean, bigint[], varchar, varchar, timestamptz, inet, varchar, jsonb,
                                           text);
DROP FUNCTION IF EXISTS levqor_audit_lock(bigint, integer);
DROP FUNCTION IF EXISTS levqor_audit_chain_hash(text, bigint, bigint, text);
DROP FUNCTION IF EXISTS levqor_audit_head_of(bigint);
ALTER TABLE tenant_audit DROP CONSTRAINT IF EXISTS audit_sealed_or_waiting;
CREATE OR REPLACE FUNCTION levqor_audit_head(p_tenant bigint) RETURNS TABLE(seq bigint, hash varchar) AS $$
BEGIN
  PERFORM pg_advisory_xact_lock(7301, (p_tenant % 2147483647)::int);
  RETURN QUERY SELECT a.seq::bigint, a.hash FROM public.tenant_audit a
               WHERE a.tenant_id = p_tenant ORDER BY a.seq DESC LIMIT 1;
END
$$ LANGUAGE plpgsql;
CREATE OR REPLACE FUNCTION levqor_audit_append_only() RETURNS trigger AS $$
BEGIN
  IF TG_OP = 'DELETE' AND current_setting('levqor.audit_purge', true) = 'on' THEN
    RETURN OLD;
  END IF;
  RAISE EXCEPTION 'tenant_audit is append-only: % refused', TG_OP USING ERRCODE = 'insufficient_privilege';
END
$$ LANGUAGE plpgsql;
"""


class Migration(migrations.Migration):

    dependencies = [
        ('compliance', '0006_audit_head_function'),
    ]

    operations = [
        migrations.AlterField(
            model_name='auditevent',
            name='hash',
            field=models.CharField(blank=True, max_length=64, null=True),
        ),
        migrations.AlterField(
            model_name='auditevent',
            name='prev_hash',
            field=models.CharField(blank=True, max_length=64, null=True),
        ),
        migrations.AlterField(
            model_name='auditevent',
            name='seq',
            field=models.PositiveBigIntegerField(blank=True, null=True),
        ),
        migrations.AddField(
            model_name='auditevent',
            name='content_to_seal',
            field=models.TextField(blank=True, editable=False, null=True),
        ),
        migrations.RunSQL(FUNCTIONS, BACKWARD),
    ]
