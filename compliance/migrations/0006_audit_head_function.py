"""levqor_audit_head(tenant): lock the tenant's chain for this transaction and return its
last (seq, hash) in one round trip (compliance.audit.record)."""
from django.db import migrations

FORWARD = """
CREATE OR REPLACE FUNCTION levqor_audit_head(p_tenant bigint) RETURNS TABLE(seq bigint, hash varchar) AS $$
BEGIN
  PERFORM pg_advisory_xact_lock(7301, (p_tenant % 2147483647)::int);
  RETURN QUERY SELECT a.seq::bigint, a.hash FROM public.tenant_audit a
               WHERE a.tenant_id = p_tenant ORDER BY a.seq DESC LIMIT 1;
END
$$ LANGUAGE plpgsql;
"""


class Migration(migrations.Migration):
    dependencies = [('compliance', '0005_evidencereport_integrityrun')]
    operations = [migrations.RunSQL(FORWARD, "DROP FUNCTION IF EXISTS levqor_audit_head(bigint);")]
