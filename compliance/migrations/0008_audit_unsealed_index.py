"""What sealers look up, without blocking writers: tenant_audit is the largest table and
every audited change inserts into it. The index of unsealed events is built
concurrently, and the check constraint added NOT VALID in 0007 is validated under a lock
that lets writes go on."""
from django.contrib.postgres.operations import AddIndexConcurrently
from django.db import migrations, models


class Migration(migrations.Migration):
    atomic = False

    dependencies = [
        ('compliance', '0007_audit_sealed_later'),
    ]

    operations = [
        AddIndexConcurrently(
            model_name='auditevent',
            index=models.Index(condition=models.Q(('seq__isnull', True)), fields=['tenant_id', 'id'], name='audit_unsealed'),
        ),
        migrations.RunSQL("ALTER TABLE tenant_audit VALIDATE CONSTRAINT audit_sealed_or_waiting", migrations.RunSQL.noop),
    ]
