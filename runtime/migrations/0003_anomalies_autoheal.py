# Anomaly detection and auto-heal (issue #10): anomaly episodes, playbook attempts, the
# switches that turn playbooks off, and the job and queue figures of the metric rollups.

import django.db.models.deletion
import django.db.models.manager
from django.db import migrations, models

TENANT_SCOPED = {
    'abstract': False,
    'base_manager_name': 'dangerously_all_tenants',
    'default_manager_name': 'objects',
}
MANAGERS = [
    ('objects', django.db.models.manager.Manager()),
    ('dangerously_all_tenants', django.db.models.manager.Manager()),
]


class Migration(migrations.Migration):

    dependencies = [
        ('runtime', '0002_metric_rollups_alert_deliveries'),
    ]

    operations = [
        migrations.AddField(model_name='metricrollup', name='jobs_succeeded', field=models.BigIntegerField(default=0)),
        migrations.AddField(model_name='metricrollup', name='jobs_failed', field=models.BigIntegerField(default=0)),
        migrations.AddField(model_name='metricrollup', name='queue_depth', field=models.BigIntegerField(default=0)),
        migrations.CreateModel(
            name='Anomaly',
            fields=[
                ('id', models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name='ID')),
                ('tenant_id', models.BigIntegerField()),
                ('metric', models.CharField(choices=[('p95_ms', 'p95 latency'), ('error_rate', 'server error rate'), ('queue_depth', 'queued tasks'), ('job_success', 'job success rate'), ('api_calls', 'API calls per minute')], max_length=16)),
                ('direction', models.CharField(max_length=4)),
                ('baseline', models.CharField(choices=[('seasonal', 'Seasonal'), ('recent', 'Recent')], max_length=8)),
                ('expected_low', models.FloatField()),
                ('expected_high', models.FloatField()),
                ('observed', models.FloatField()),
                ('worst', models.FloatField()),
                ('explanation', models.TextField()),
                ('started_at', models.DateTimeField()),
                ('detected_at', models.DateTimeField()),
                ('resolved_at', models.DateTimeField(blank=True, null=True)),
                ('alert_id', models.BigIntegerField(blank=True, null=True)),
            ],
            options={
                **TENANT_SCOPED,
                'db_table': 'runtime_anomalies',
                'ordering': ['-started_at'],
                'indexes': [models.Index(fields=['tenant_id', '-started_at'], name='anomaly_tenant_recent')],
                'constraints': [models.UniqueConstraint(condition=models.Q(('resolved_at__isnull', True)), fields=('tenant_id', 'metric'), name='anomaly_one_open_per_metric')],
            },
            managers=MANAGERS,
        ),
        migrations.CreateModel(
            name='AutohealRun',
            fields=[
                ('id', models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name='ID')),
                ('tenant_id', models.BigIntegerField()),
                ('playbook', models.CharField(max_length=32)),
                ('attempt', models.PositiveSmallIntegerField(default=1)),
                ('status', models.CharField(choices=[('ok', 'Ok'), ('skipped', 'Skipped'), ('failed', 'Failed'), ('escalated', 'Escalated')], max_length=16)),
                ('detail_json', models.JSONField(blank=True, default=dict)),
                ('error', models.CharField(blank=True, max_length=500)),
                ('created_at', models.DateTimeField(auto_now_add=True)),
                ('anomaly', models.ForeignKey(on_delete=django.db.models.deletion.CASCADE, related_name='autoheal_runs', to='runtime.anomaly')),
            ],
            options={
                **TENANT_SCOPED,
                'db_table': 'runtime_autoheal_runs',
                'ordering': ['-created_at'],
                'constraints': [models.UniqueConstraint(fields=('anomaly', 'playbook', 'attempt'), name='autoheal_attempt_once')],
            },
            managers=MANAGERS,
        ),
        migrations.CreateModel(
            name='AutohealSwitch',
            fields=[
                ('id', models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name='ID')),
                ('tenant_id', models.BigIntegerField(blank=True, null=True)),
                ('playbook', models.CharField(max_length=32)),
                ('enabled', models.BooleanField(default=False)),
                ('reason', models.CharField(blank=True, max_length=500)),
                ('changed_by', models.CharField(blank=True, max_length=200)),
                ('updated_at', models.DateTimeField(auto_now=True)),
            ],
            options={
                'db_table': 'runtime_autoheal_switches',
                'constraints': [models.UniqueConstraint(fields=('tenant_id', 'playbook'), name='autoheal_switch_once', nulls_distinct=False)],
            },
        ),
    ]
