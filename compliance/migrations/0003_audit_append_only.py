"""tenant_audit is append-only: the database itself refuses UPDATE and DELETE.

The one exception is compliance.audit.purge(), which sets `levqor.audit_purge` for its
own transaction and leaves a checkpoint from which the chain stays verifiable.
"""
from django.db import migrations

FORWARD = """
CREATE OR REPLACE FUNCTION levqor_audit_append_only() RETURNS trigger AS $$
BEGIN
  IF TG_OP = 'DELETE' AND current_setting('levqor.audit_purge', true) = 'on' THEN
    RETURN OLD;
  END IF;
  RAISE EXCEPTION 'tenant_audit is append-only: % refused', TG_OP USING ERRCODE = 'insufficient_privilege';
END
$$ LANGUAGE plpgsql;
DROP TRIGGER IF EXISTS tenant_audit_append_only ON tenant_audit;
CREATE TRIGGER tenant_audit_append_only BEFORE UPDATE OR DELETE ON tenant_audit
  FOR EACH ROW EXECUTE FUNCTION levqor_audit_append_only();
"""

BACKWARD = """
DROP TRIGGER IF EXISTS tenant_audit_append_only ON tenant_audit;
DROP FUNCTION IF EXISTS levqor_audit_append_only();
"""


class Migration(migrations.Migration):
    dependencies = [("compliance", "0002_auditcheckpoint")]
    operations = [migrations.RunSQL(FORWARD, BACKWARD)]
