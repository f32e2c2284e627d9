"""Runtime records: backups, region failovers, where each region's primary is now, and per-tenant
metrics with the delivery of alerts."""
from django.contrib.postgres.fields import ArrayField
from django.db import models

from tenants.scoping import TenantScopedModel


class Backup(TenantScopedModel):
    """One backup of one tenant: its schema (or database) and its rows of shared tables,
    stored compressed and checksummed in the tenant's region."""

    class Status(models.TextChoices):
        RUNNING = "running"
        OK = "ok"
        FAILED = "failed"
        EXPIRED = "expired"  # removed by retention; the row stays as the record

    tenant_id = models.BigIntegerField(db_index=True)
    region = models.CharField(max_length=64)
    isolation = models.CharField(max_length=16)
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.RUNNING, db_index=True)
    trigger = models.CharField(max_length=16, default="manual")  # manual, nightly, portal, api
    actor = models.CharField(max_length=200, default="system")
    storage_name = models.CharField(max_length=500, blank=True)
    size_bytes = models.BigIntegerField(default=0)
    checksum_sha256 = models.CharField(max_length=64, blank=True)
    encrypted = models.BooleanField(default=False)
    manifest_json = models.JSONField(default=dict, blank=True)  # tables, row counts, checksums, migrations
    duration_ms = models.PositiveIntegerField(null=True, blank=True)
    error = models.TextField(blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    expires_at = models.DateTimeField(null=True, blank=True, db_index=True)

    class Meta(TenantScopedModel.Meta):
        db_table = "tenant_backups"
        ordering = ["-created_at"]


class RegionState(models.Model):
    """Where a region's primary database server is now, when it differs from settings
    (after a failover). The connection broker and provisioning read it."""

    region = models.CharField(max_length=64, unique=True)
    database_url_encrypted = models.TextField()  # Fernet, like tenant DSNs
    failed_over_at = models.DateTimeField(null=True, blank=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        db_table = "region_state"


class Failover(models.Model):
    """One failover of a region: when, why, by whom, and the measured RPO/RTO."""

    class Status(models.TextChoices):
        RUNNING = "running"
        DONE = "done"
        FAILED = "failed"

    region = models.CharField(max_length=64, db_index=True)
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.RUNNING)
    trigger = models.CharField(max_length=16, default="manual")  # manual, health_check
    actor = models.CharField(max_length=200, default="system")
    reason = models.TextField(blank=True)
    replica_lag_bytes = models.BigIntegerField(null=True, blank=True)
    rpo_seconds = models.FloatField(null=True, blank=True)
    rto_seconds = models.FloatField(null=True, blank=True)
    detail_json = models.JSONField(default=dict, blank=True)
    started_at = models.DateTimeField(auto_now_add=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        db_table = "region_failovers"
        ordering = ["-started_at"]


# --- metrics and alert delivery (runtime/metrics.py, runtime/alerting.py) -------------------


class MetricRollup(TenantScopedModel):
    """One tenant's requests in one minute (`seconds` = 60) or, once older than the minute
    retention, one hour (3600). A fixed-size row however busy the tenant: counts and a
    latency histogram over runtime.metrics.BOUNDS_MS, never individual requests. Rows
    exist only for periods with traffic."""

    tenant_id = models.BigIntegerField()
    seconds = models.PositiveIntegerField()
    start = models.DateTimeField()
    requests = models.BigIntegerField(default=0)  # API and portal
    api_calls = models.BigIntegerField(default=0)  # on tenant API routes
    client_errors = models.BigIntegerField(default=0)  # 4xx
    errors = models.BigIntegerField(default=0)  # 5xx
    error_minutes = models.IntegerField(default=0)  # minutes with at least one 5xx (uptime)
    latency_buckets = ArrayField(models.BigIntegerField())
    latency_sum_ms = models.FloatField(default=0)
    latency_max_ms = models.FloatField(default=0)
    jobs_succeeded = models.BigIntegerField(default=0)  # workflow runs finished in the period
    jobs_failed = models.BigIntegerField(default=0)
    # Tasks waiting when the anomaly detector closed the minute (runtime/anomaly.py); in an
    # hourly row, the most of its minutes (a nightly batch's peak is what that hour expects).
    queue_depth = models.BigIntegerField(default=0)

    class Meta(TenantScopedModel.Meta):
        db_table = "runtime_metric_rollups"
        constraints = [models.UniqueConstraint(fields=["tenant_id", "seconds", "start"], name="metric_rollup_once")]
        indexes = [models.Index(fields=["seconds", "start"], name="metric_rollup_period")]


class AlertDelivery(models.Model):
    """One alert sent to one channel. The row is locked while sending and marked `sent`
    after, so retries, sweeps and concurrent workers deliver each alert once per channel."""

    class Channel(models.TextChoices):
        WEBHOOK = "webhook"  # LEVQOR_ALERT_WEBHOOK_URL, signed
        STAFF_EMAIL = "staff_email"  # LEVQOR_ALERT_EMAILS
        TENANT_EMAIL = "tenant_email"  # the tenant's owners and admins (tenant-audience alerts)

    class Status(models.TextChoices):
        PENDING = "pending"  # not sent yet, or retrying
        SENT = "sent"
        FAILED = "failed"  # gave up after runtime.alerting.MAX_ATTEMPTS

    alert = models.ForeignKey("compliance.Alert", on_delete=models.CASCADE, related_name="deliveries")
    channel = models.CharField(max_length=16, choices=Channel.choices)
    status = models.CharField(max_length=8, choices=Status.choices, default=Status.PENDING)
    attempts = models.PositiveIntegerField(default=0)
    last_error = models.CharField(max_length=500, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    sent_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        db_table = "runtime_alert_deliveries"
        constraints = [models.UniqueConstraint(fields=["alert", "channel"], name="alert_delivered_once_per_channel")]


# --- circuit breakers and cost controls (runtime/breakers.py, runtime/capacity.py, runtime/lifecycle.py) --


class Breaker(models.Model):
    """The last known state of one outbound dependency's circuit breaker, for the staff
    admin. Redis holds the live state (runtime/breakers.py); this row follows every
    transition, so it is at most one journal flush behind."""

    class State(models.TextChoices):
        CLOSED = "closed"
        OPEN = "open"
        HALF_OPEN = "half_open"

    name = models.CharField(max_length=200, unique=True)  # stripe, notion, siem:<stream id>, replica:<region>
    state = models.CharField(max_length=16, choices=State.choices, default=State.CLOSED)
    failures = models.PositiveIntegerField(default=0)  # consecutive failures at the last transition
    reason = models.CharField(max_length=500, blank=True)
    actor = models.CharField(max_length=200, blank=True)
    changed_at = models.DateTimeField()  # the last transition

    class Meta:
        db_table = "runtime_breakers"
        ordering = ["name"]

    def __str__(self):
        return self.name


class BreakerEvent(models.Model):
    """One transition of one breaker (closed -> open -> half_open -> closed ...)."""

    uid = models.CharField(max_length=32, unique=True)  # from the Redis journal: a re-flush inserts nothing
    name = models.CharField(max_length=200, db_index=True)
    from_state = models.CharField(max_length=16)
    to_state = models.CharField(max_length=16)
    failures = models.PositiveIntegerField(default=0)
    reason = models.CharField(max_length=500, blank=True)
    actor = models.CharField(max_length=200, blank=True)
    at = models.DateTimeField(db_index=True)

    class Meta:
        db_table = "runtime_breaker_events"
        ordering = ["-at", "-id"]


class ExpiredFile(models.Model):
    """A stored file the storage lifecycle deleted (runtime/lifecycle.py): what, whose,
    when, and by which rule. The record stays after the file is gone."""

    class Kind(models.TextChoices):
        BACKUP = "backup"
        EVIDENCE = "evidence"

    tenant_id = models.BigIntegerField(db_index=True)
    kind = models.CharField(max_length=16, choices=Kind.choices)
    object_id = models.BigIntegerField()  # the Backup or EvidenceReport row
    region = models.CharField(max_length=64)
    storage_name = models.CharField(max_length=500)
    size_bytes = models.BigIntegerField(default=0)
    plan = models.CharField(max_length=32)
    retention_days = models.PositiveIntegerField()
    created_at = models.DateTimeField()  # when the file was made
    expired_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        db_table = "runtime_expired_files"
        ordering = ["-expired_at"]
        constraints = [models.UniqueConstraint(fields=["kind", "object_id"], name="expired_file_once")]


# --- anomalies and auto-heal (runtime/anomaly.py, runtime/autoheal.py) ------------------------


class Anomaly(TenantScopedModel):
    """One episode of one tenant's metric outside the band its own history predicts: opened
    when the last minutes are all out of the band, resolved when they are back in it. The
    band is the one in force when it opened (the baseline does not learn the anomaly)."""

    class Metric(models.TextChoices):
        P95_MS = "p95_ms", "p95 latency"
        ERROR_RATE = "error_rate", "server error rate"
        QUEUE_DEPTH = "queue_depth", "queued tasks"
        JOB_SUCCESS = "job_success", "job success rate"
        API_CALLS = "api_calls", "API calls per minute"

    class Baseline(models.TextChoices):
        SEASONAL = "seasonal"  # the same hour of the week in the previous weeks, adjusted to the last hour
        RECENT = "recent"  # median/MAD of the last hour (not enough history yet)

    tenant_id = models.BigIntegerField()
    metric = models.CharField(max_length=16, choices=Metric.choices)
    direction = models.CharField(max_length=4)  # high, low
    baseline = models.CharField(max_length=8, choices=Baseline.choices)
    expected_low = models.FloatField()
    expected_high = models.FloatField()
    observed = models.FloatField()  # at detection
    worst = models.FloatField()  # furthest from the band while open
    explanation = models.TextField()
    started_at = models.DateTimeField()  # the first minute out of the band
    detected_at = models.DateTimeField()
    resolved_at = models.DateTimeField(null=True, blank=True)
    alert_id = models.BigIntegerField(null=True, blank=True)

    class Meta(TenantScopedModel.Meta):
        db_table = "runtime_anomalies"
        ordering = ["-started_at"]
        constraints = [models.UniqueConstraint(fields=["tenant_id", "metric"], condition=models.Q(resolved_at__isnull=True),
                                               name="anomaly_one_open_per_metric")]
        indexes = [models.Index(fields=["tenant_id", "-started_at"], name="anomaly_tenant_recent")]

    def __str__(self):
        return self.explanation


class AutohealRun(TenantScopedModel):
    """One attempt of one playbook for one anomaly. A playbook runs once per anomaly: done
    after an `ok` or `skipped` attempt (its guard said there was nothing to do), retried
    after a first `failed` one, and `escalated` to a person after a second."""

    class Status(models.TextChoices):
        OK = "ok"
        SKIPPED = "skipped"
        FAILED = "failed"
        ESCALATED = "escalated"  # the second failure: a page went out, no more attempts

    tenant_id = models.BigIntegerField()
    anomaly = models.ForeignKey(Anomaly, on_delete=models.CASCADE, related_name="autoheal_runs")
    playbook = models.CharField(max_length=32)
    attempt = models.PositiveSmallIntegerField(default=1)
    status = models.CharField(max_length=16, choices=Status.choices)
    detail_json = models.JSONField(default=dict, blank=True)
    error = models.CharField(max_length=500, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta(TenantScopedModel.Meta):
        db_table = "runtime_autoheal_runs"
        ordering = ["-created_at"]
        constraints = [models.UniqueConstraint(fields=["anomaly", "playbook", "attempt"], name="autoheal_attempt_once")]


class AutohealSwitch(models.Model):
    """Turns auto-heal playbooks off (or back on): for the fleet (no tenant) or one tenant;
    `playbook` "*" means all of them. A tenant switch cannot turn on what the fleet (or
    settings.LEVQOR_AUTOHEAL_DISABLED) turned off."""

    tenant_id = models.BigIntegerField(null=True, blank=True)
    playbook = models.CharField(max_length=32)
    enabled = models.BooleanField(default=False)
    reason = models.CharField(max_length=500, blank=True)
    changed_by = models.CharField(max_length=200, blank=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        db_table = "runtime_autoheal_switches"
        constraints = [models.UniqueConstraint(fields=["tenant_id", "playbook"], nulls_distinct=False,
                                               name="autoheal_switch_once")]

    def __str__(self):
        scope = f"tenant {self.tenant_id}" if self.tenant_id else "fleet"
        return f"{self.playbook} {'on' if self.enabled else 'off'} for {scope}"
