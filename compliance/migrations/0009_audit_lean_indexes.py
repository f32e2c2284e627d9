"""Cheaper appends and seals of audit events (bench/audit.py), with the same guarantees.

- Four indexes go: tenant_id, event (and its LIKE twin) and ts on their own. Every read of
  tenant_audit is one tenant's, by seq (`audit_chain_no_fork`) or by time
  (`audit_tenant_ts`), and both lead with tenant_id; each extra index cost every insert,
  and every seal again (a seal changes `seq`, so its new row version is indexed anew).
  Dropped concurrently: writers go on meanwhile.
- levqor_audit_chain_hash is declared STABLE, which it is (format() and convert_to() are
  stable). Declared IMMUTABLE, the planner refused to inline it, so every append and every
  sealed event ran it as a separate SQL function, parsed and planned again in each
  transaction. Its result is unchanged: audit_verify recomputes every hash in Python.
"""
from django.db import migrations, models

_INDEXES = [  # (name, definition): the names Django gave them
    ("tenant_audit_tenant_id_48511314", "(tenant_id)"),
    ("tenant_audit_event_fa062a3d_like", "(event varchar_pattern_ops)"),
    ("tenant_audit_event_fa062a3d", "(event)"),
    ("tenant_audit_ts_6d1df238", "(ts)"),
]
# One statement each: CONCURRENTLY cannot run inside a transaction block.
DROP = [f"DROP INDEX CONCURRENTLY IF EXISTS {name}" for name, _ in _INDEXES]
RESTORE = [f"CREATE INDEX CONCURRENTLY IF NOT EXISTS {name} ON tenant_audit {columns}" for name, columns in _INDEXES]


class Migration(migrations.Migration):
    atomic = False  # DROP INDEX CONCURRENTLY cannot run in a transaction

    dependencies = [
        ('compliance', '0008_audit_unsealed_index'),
    ]

    operations = [
        migrations.SeparateDatabaseAndState(
            state_operations=[
                migrations.AlterField(model_name='auditevent', name='tenant_id', field=models.BigIntegerField()),
                migrations.AlterField(model_name='auditevent', name='event', field=models.CharField(max_length=64)),
                migrations.AlterField(model_name='auditevent', name='ts', field=models.DateTimeField()),
            ],
            database_operations=[migrations.RunSQL(DROP, RESTORE)],
        ),
        migrations.RunSQL(
            "ALTER FUNCTION levqor_audit_chain_hash(text, bigint, bigint, text) STABLE",
            "ALTER FUNCTION levqor_audit_chain_hash(text, bigint, bigint, text) IMMUTABLE",
        ),
    ]
