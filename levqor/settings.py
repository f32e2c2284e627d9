"""Levqor settings: configured by environment only (12-factor).

Every variable read here is listed, with its default, in README.md's Configuration
section. Nothing below should need editing to deploy.
"""
from __future__ import annotations

import os
from pathlib import Path

import dj_database_url
from celery.schedules import crontab

from levqor.regions import parse_regions

BASE_DIR = Path(__file__).resolve().parent.parent


def env_bool(name: str, default: bool) -> bool:
    value = os.environ.get(name)
    if value is None or value == "":
        return default
    return value.strip().lower() in {"1", "true", "yes", "on"}


def env_list(name: str, default: str) -> list[str]:
    return [item.strip() for item in os.environ.get(name, default).split(",") if item.strip()]


DEBUG = env_bool("DJANGO_DEBUG", False)
SECRET_KEY = os.environ.get("DJANGO_SECRET_KEY") or (
    "levqor-insecure-development-key-set-DJANGO_SECRET_KEY-in-production" if DEBUG or os.environ.get("LEVQOR_DEV") else ""
)
if not SECRET_KEY:
    # Refuse to start with a guessable key outside development: API key hashes and
    # encrypted secrets are keyed from it.
    from django.core.exceptions import ImproperlyConfigured

    raise ImproperlyConfigured("DJANGO_SECRET_KEY is not set (set DJANGO_DEBUG=true for local development)")

# Secrets at rest (tenant DSNs, SSO and SIEM secrets) are encrypted with a key derived
# from this; API keys are hashed with a pepper derived from it. Rotating it needs a
# re-encryption job, so it is separate from DJANGO_SECRET_KEY when set.
LEVQOR_SECRETS_KEY = os.environ.get("LEVQOR_SECRETS_KEY") or SECRET_KEY

ALLOWED_HOSTS = env_list("DJANGO_ALLOWED_HOSTS", "*" if DEBUG else "localhost,127.0.0.1,.levqor.ai")
CSRF_TRUSTED_ORIGINS = env_list("DJANGO_CSRF_TRUSTED_ORIGINS", "")

TENANCY_ENABLED = env_bool("TENANCY_ENABLED", True)
# Single-tenant layout (TENANCY_ENABLED=false, and the migration plan M1-M4 in tenants/legacy.py):
# the schema holding the one organization's product tables, and the plan it runs on.
LEVQOR_LEGACY_SCHEMA = os.environ.get("LEVQOR_LEGACY_SCHEMA", "levqor_legacy")
LEVQOR_LEGACY_PLAN = os.environ.get("LEVQOR_LEGACY_PLAN", "enterprise")
LEVQOR_BASE_DOMAIN = os.environ.get("LEVQOR_BASE_DOMAIN", "tenant.levqor.ai").lower().strip(".")
# Hosts that serve the platform itself (never looked up as a tenant's custom domain).
LEVQOR_PLATFORM_HOSTS = env_list("LEVQOR_PLATFORM_HOSTS", "localhost,127.0.0.1,testserver,levqor.ai,www.levqor.ai")
LEVQOR_SIGNUP_RATE = os.environ.get("LEVQOR_SIGNUP_RATE", "10/hour")
LEVQOR_DELETE_GRACE_DAYS = int(os.environ.get("LEVQOR_DELETE_GRACE_DAYS", "30"))
LEVQOR_FAULTS = frozenset(env_list("LEVQOR_FAULTS", ""))
# Seconds a process may serve a tenant or key from memory if it misses a change notice.
LEVQOR_HOT_CACHE_SECONDS = float(os.environ.get("LEVQOR_HOT_CACHE_SECONDS", "5"))
LEVQOR_KEY_ROTATION_DAYS = int(os.environ.get("LEVQOR_KEY_ROTATION_DAYS", "90"))
LEVQOR_MAX_BODY_BYTES = int(os.environ.get("LEVQOR_MAX_BODY_BYTES", str(1024 * 1024)))
# Outbound destinations tenants configure (SIEM streams) must be public HTTPS; hosts listed
# here may also be plain HTTP and internal (tests use 127.0.0.1).
LEVQOR_OUTBOUND_ALLOW_HOSTS = env_list("LEVQOR_OUTBOUND_ALLOW_HOSTS", "")
# Client IPs are taken from X-Forwarded-For only behind a proxy we trust to set it.
LEVQOR_TRUST_X_FORWARDED_FOR = env_bool("LEVQOR_TRUST_X_FORWARDED_FOR", False)

DATABASES = {
    "default": dj_database_url.parse(
        os.environ.get("DATABASE_URL", "postgres://postgres@127.0.0.1:5432/levqor"),
        conn_max_age=int(os.environ.get("DATABASE_CONN_MAX_AGE", "60")),
        # A persistent connection is checked (SELECT 1) before a request's first query, so
        # the first request after a PostgreSQL restart reconnects instead of failing.
        conn_health_checks=env_bool("DATABASE_CONN_HEALTH_CHECKS", True),
    )
}
# django-tenants' backend, plus statement-scoped search paths behind a transaction pooler.
DATABASES["default"]["ENGINE"] = "levqor.db"
ORIGINAL_BACKEND = "django.db.backends.postgresql"
# "transaction" when connecting through PgBouncer (or any pooler) in transaction mode.
LEVQOR_DB_POOLING = os.environ.get("LEVQOR_DB_POOLING", "session")
if LEVQOR_DB_POOLING == "transaction":
    DATABASES["default"]["DISABLE_SERVER_SIDE_CURSORS"] = True
DATABASES["default"].setdefault("TEST", {})
REDIS_URL = os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0")

# Regions: a comma list of names (each on DATABASE_URL), or JSON mapping each region to
# {"database_url", "replica_url", "storage"}. The first region is the default one.
LEVQOR_REGIONS = parse_regions(os.environ.get("LEVQOR_REGIONS", ""), default_database_url=DATABASES["default"])
LEVQOR_DEFAULT_REGION = next(iter(LEVQOR_REGIONS))
# Region failover (runtime/dr.py): fail a region over to its replica after this many
# consecutive failed health checks (every 10 s), each given this many seconds to connect;
# processes re-read which regions failed over this often; the DNS step's class.
LEVQOR_FAILOVER_AFTER_FAILURES = int(os.environ.get("LEVQOR_FAILOVER_AFTER_FAILURES", "3"))
LEVQOR_HEALTH_CHECK_TIMEOUT = int(os.environ.get("LEVQOR_HEALTH_CHECK_TIMEOUT", "2"))
LEVQOR_REGION_MAP_SECONDS = float(os.environ.get("LEVQOR_REGION_MAP_SECONDS", "2"))
LEVQOR_DNS_BACKEND = os.environ.get("LEVQOR_DNS_BACKEND", "runtime.dns.LogOnlyDNS")
# Per-tenant backups (runtime/backups.py): Fernet-encrypt each archive at rest.
LEVQOR_BACKUP_ENCRYPT = env_bool("LEVQOR_BACKUP_ENCRYPT", False)

SHARED_APPS = [
    "tenants",  # first: its `migrate` command replaces django-tenants' one
    "django_tenants",
    "django.contrib.contenttypes",
    "django.contrib.auth",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "django.contrib.admin",
    "django.contrib.sites",
    "django.contrib.humanize",
    "allauth",
    "allauth.account",
    "allauth.socialaccount",
    "allauth.socialaccount.providers.openid_connect",
    "allauth.socialaccount.providers.saml",
    "allauth.mfa",
    "rest_framework",
    "drf_spectacular",
    "guardian",
    "djstripe",
    "policy",
    "compliance",
    "billing",
    "runtime",
    "federation",
    "marketplace",
]
# Tenant apps live in each tenant's schema (strategy A) or database (strategy B).
# Their models must not hold foreign keys to shared tables: a tenant database cannot
# reach them. Actors are recorded as strings.
TENANT_APPS = [
    "workflows",
]
INSTALLED_APPS = SHARED_APPS + [app for app in TENANT_APPS if app not in SHARED_APPS]

TENANT_MODEL = "tenants.Tenant"
TENANT_DOMAIN_MODEL = "tenants.Domain"
PUBLIC_SCHEMA_NAME = "public"
# New schemas are built from this migrated template, never by migrating each one.
LEVQOR_TEMPLATE_SCHEMA = "levqor_template"
TENANT_LIMIT_SET_CALLS = True
# django-tenants insists on its router being listed; ours decides first.
DATABASE_ROUTERS = ["tenants.routers.TenantRouter", "django_tenants.routers.TenantSyncRouter"]

MIDDLEWARE = [
    "levqor.middleware.RequestMetricsMiddleware",  # first: times the whole stack (runtime/metrics.py)
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "levqor.middleware.BodySizeLimitMiddleware",
    "compliance.middleware.AuditRequestMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "allauth.account.middleware.AccountMiddleware",
    "tenants.middleware.TenantContextMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

# Paths that need a tenant context; everything else is a platform route.
LEVQOR_TENANT_ROUTE_PREFIXES = ("/api/workflows", "/api/org", "/api/marketplace")

ROOT_URLCONF = "levqor.urls"
WSGI_APPLICATION = "levqor.wsgi.application"
SITE_ID = 1

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

AUTHENTICATION_BACKENDS = [
    "django.contrib.auth.backends.ModelBackend",
    "allauth.account.auth_backends.AuthenticationBackend",
    "guardian.backends.ObjectPermissionBackend",
]
# Sign-up and login (django-allauth): by email; verification mails go through EMAIL_*.
ACCOUNT_LOGIN_METHODS = {"email"}
ACCOUNT_SIGNUP_FIELDS = ["email*", "password1*", "password2*"]
# Outside development, a new account must verify its email address before it can sign in.
ACCOUNT_EMAIL_VERIFICATION = os.environ.get("LEVQOR_EMAIL_VERIFICATION", "optional" if DEBUG else "mandatory")
# Second factor for password logins: TOTP apps, with recovery codes (allauth.mfa).
MFA_SUPPORTED_TYPES = ["totp", "recovery_codes"]
MFA_TOTP_ISSUER = "Levqor"
ACCOUNT_UNIQUE_EMAIL = True
LOGIN_REDIRECT_URL = "/org"
# Tenants' identity providers come from tenants.sso (never from allauth's tables).
SOCIALACCOUNT_ADAPTER = "tenants.sso.TenantSSOAdapter"
SOCIALACCOUNT_EMAIL_AUTHENTICATION = False  # an IdP's email claim never takes over an existing account
SOCIALACCOUNT_STORE_TOKENS = False
LOGIN_URL = "/accounts/login/"
EMAIL_BACKEND = os.environ.get("DJANGO_EMAIL_BACKEND", "django.core.mail.backends.console.EmailBackend")
EMAIL_HOST = os.environ.get("EMAIL_HOST", "localhost")
EMAIL_PORT = int(os.environ.get("EMAIL_PORT", "25"))
DEFAULT_FROM_EMAIL = os.environ.get("DEFAULT_FROM_EMAIL", "Levqor <no-reply@levqor.local>")

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
]

CACHES = {
    "default": {
        "BACKEND": "django.core.cache.backends.redis.RedisCache",
        "LOCATION": REDIS_URL,
        "KEY_PREFIX": "levqor",
    }
}

REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "tenants.authentication.APIKeyAuthentication",
        "rest_framework.authentication.SessionAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
    "DEFAULT_PARSER_CLASSES": ["rest_framework.parsers.JSONParser"],
    "DEFAULT_RENDERER_CLASSES": ["rest_framework.renderers.JSONRenderer"],
    "EXCEPTION_HANDLER": "levqor.errors.api_exception_handler",
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "DEFAULT_PAGINATION_CLASS": "levqor.pagination.BoundedLimitOffsetPagination",  # ?limit at most 200
    "PAGE_SIZE": 50,
    "UNAUTHENTICATED_USER": None,
    "URL_FORMAT_OVERRIDE": None,  # ?format= belongs to our endpoints (audit export), not to DRF
}
SPECTACULAR_SETTINGS = {
    "TITLE": "Levqor API",
    "DESCRIPTION": "Multi-tenant control plane. See API.md for the contract.",
    "VERSION": "1.0.0",
    "SERVE_INCLUDE_SCHEMA": False,
}

CELERY_BROKER_URL = os.environ.get("CELERY_BROKER_URL", REDIS_URL)
CELERY_RESULT_BACKEND = os.environ.get("CELERY_RESULT_BACKEND", REDIS_URL)
CELERY_TASK_ALWAYS_EAGER = env_bool("CELERY_TASK_ALWAYS_EAGER", False)
CELERY_TASK_ACKS_LATE = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
# Chaos drills (docs/chaos.md). Nothing reads task results (state lives in our own rows), and
# with a result backend every .delay() subscribes to it first: with Redis down that was 20 s
# of retries and a 500. A pool child killed mid-task (OOM, SIGKILL) must put its message
# back, not ack it: acks_late alone acks it and the task is lost.
CELERY_TASK_IGNORE_RESULT = True
CELERY_TASK_REJECT_ON_WORKER_LOST = True
# A task still unacknowledged this long after delivery (its worker died) is delivered again;
# it must exceed the longest task (backups), or a running task is duplicated.
# Workers look for such messages every ~100 s (kombu's default), more often with a short timeout.
LEVQOR_TASK_VISIBILITY_SECONDS = int(os.environ.get("LEVQOR_TASK_VISIBILITY_SECONDS", "3600"))
CELERY_BROKER_TRANSPORT_OPTIONS = {
    "visibility_timeout": LEVQOR_TASK_VISIBILITY_SECONDS,
    "unacked_restore_interval": max(1, min(10, LEVQOR_TASK_VISIBILITY_SECONDS // 3)),
    "unacked_restore_throttle": 1 if LEVQOR_TASK_VISIBILITY_SECONDS < 300 else 10,
}
CELERY_BEAT_SCHEDULE = {
    "purge-deleted-tenants": {"task": "tenants.tasks.purge_deleted_tenants", "schedule": 3600.0},
    "flush-usage": {"task": "policy.tasks.flush_usage", "schedule": 60.0},
    "reap-stalled-provisioning": {"task": "tenants.tasks.reap_stalled_provisioning", "schedule": 300.0},
    "audit-retention": {"task": "compliance.tasks.audit_retention", "schedule": 86400.0},
    "sweep-audit-streams": {"task": "compliance.tasks.sweep_streams", "schedule": 60.0},
    "seal-audit-events": {"task": "compliance.tasks.seal_audit", "schedule": 10.0, "options": {"expires": 10}},
    # Nightly billing, after midnight UTC: usage to Stripe, then reconciliation, then Notion.
    "billing-nightly": {"task": "billing.tasks.nightly", "schedule": crontab(minute=30, hour=0)},
    "billing-grace": {"task": "billing.tasks.enforce_grace", "schedule": 3600.0},
    "metrics-minutely": {"task": "runtime.metrics_tasks.minutely", "schedule": 60.0},  # flush + error-rate alerts
    # Per-tenant anomalies, then auto-heal on the open ones (runtime/anomaly.py, runtime/autoheal.py).
    "detect-anomalies": {"task": "runtime.metrics_tasks.detect_anomalies", "schedule": 60.0, "options": {"expires": 55}},
    "metrics-rollup": {"task": "runtime.metrics_tasks.rollup", "schedule": 3600.0},
    "alerts-sweep": {"task": "runtime.metrics_tasks.sweep_alerts", "schedule": 300.0},
    "hibernate-idle-tenants": {"task": "runtime.metrics_tasks.hibernate_idle", "schedule": crontab(minute=15, hour=3)},
    "weekly-pulse": {"task": "runtime.metrics_tasks.weekly_pulse", "schedule": crontab(minute=0, hour=7, day_of_week="mon")},
    "check-region-health": {"task": "runtime.tasks.check_region_health", "schedule": 10.0, "options": {"expires": 10}},
    "nightly-backups": {"task": "runtime.backup_tasks.nightly_backups", "schedule": crontab(minute=0, hour=2)},
    "backup-retention": {"task": "runtime.backup_tasks.backup_retention", "schedule": 3600.0},
    # Circuit breakers, cost controls, backup freshness (runtime/breakers.py, capacity.py, lifecycle.py).
    "breakers-flush": {"task": "runtime.tasks.flush_breaker_journal", "schedule": 30.0, "options": {"expires": 30}},
    "tenant-queue-release": {"task": "runtime.tasks.release_held_tasks", "schedule": 10.0, "options": {"expires": 10}},
    "storage-lifecycle": {"task": "runtime.tasks.storage_lifecycle", "schedule": crontab(minute=45, hour=3)},
    "backups-stale-check": {"task": "runtime.tasks.check_stale_backups", "schedule": 3600.0},
    # Industry benchmarks of the month just ended (federation/aggregate.py), opted-in tenants only.
    "federation-aggregate": {"task": "federation.tasks.aggregate", "schedule": crontab(minute=30, hour=2, day_of_month=1)},
    # Partner payouts for the month just ended, then reconciliation against Stripe's transfers.
    "marketplace-payouts": {"task": "marketplace.tasks.monthly_payouts", "schedule": crontab(minute=0, hour=4, day_of_month=2)},
}

# Billing (billing/): on when STRIPE_SECRET_KEY is set. STRIPE_API_BASE points the SDK at
# another API host (the local Stripe server of the tests and benchmarks).
STRIPE_SECRET_KEY = os.environ.get("STRIPE_SECRET_KEY", "")
STRIPE_LIVE_MODE = STRIPE_SECRET_KEY.startswith("sk_live_")
STRIPE_TEST_SECRET_KEY = "" if STRIPE_LIVE_MODE else STRIPE_SECRET_KEY
STRIPE_API_BASE = os.environ.get("STRIPE_API_BASE", "")
STRIPE_MAX_NETWORK_RETRIES = int(os.environ.get("STRIPE_MAX_NETWORK_RETRIES", "2"))
STRIPE_WEBHOOK_SECRET = os.environ.get("STRIPE_WEBHOOK_SECRET", "")
# Webhooks older than this (seconds, by their signed timestamp) are refused as replays.
STRIPE_WEBHOOK_TOLERANCE = int(os.environ.get("STRIPE_WEBHOOK_TOLERANCE", "300"))
STRIPE_CURRENCY = os.environ.get("STRIPE_CURRENCY", "usd")
DJSTRIPE_FOREIGN_KEY_TO_FIELD = "id"
DJSTRIPE_WEBHOOK_SECRET = STRIPE_WEBHOOK_SECRET
DJSTRIPE_USE_NATIVE_JSONFIELD = True
# Days a tenant keeps working after a failed payment before it is suspended (0: at once).
LEVQOR_BILLING_GRACE_DAYS = float(os.environ.get("LEVQOR_BILLING_GRACE_DAYS", "7"))
# Parallel Stripe calls of the nightly usage sync.
LEVQOR_BILLING_SYNC_WORKERS = int(os.environ.get("LEVQOR_BILLING_SYNC_WORKERS", "8"))
# The nightly per-tenant summary to a Notion database: off unless both are set.
NOTION_TOKEN = os.environ.get("NOTION_TOKEN", "")
NOTION_BILLING_DATABASE_ID = os.environ.get("NOTION_BILLING_DATABASE_ID", "")
NOTION_API_BASE = os.environ.get("NOTION_API_BASE", "https://api.notion.com")

# Per-tenant metrics, alerts, the weekly pulse and hibernation (runtime/, docs/observability.md).
# Seconds between two batched writes of a process's request metrics.
LEVQOR_METRICS_FLUSH_SECONDS = float(os.environ.get("LEVQOR_METRICS_FLUSH_SECONDS", "5"))
# Per-minute metric rows are kept this long, then folded into hourly rows (at least 24 h:
# the longest window /api/org/metrics serves); hourly rows are kept the days below.
LEVQOR_METRICS_MINUTE_RETENTION_HOURS = max(24, int(os.environ.get("LEVQOR_METRICS_MINUTE_RETENTION_HOURS", "48")))
LEVQOR_METRICS_HOUR_RETENTION_DAYS = int(os.environ.get("LEVQOR_METRICS_HOUR_RETENTION_DAYS", "400"))
# Bearer token Prometheus scrapes /metrics with (platform staff keys work too); empty: staff keys only.
LEVQOR_METRICS_TOKEN = os.environ.get("LEVQOR_METRICS_TOKEN", "")
# Celery queues whose waiting tasks make the queue depth.
LEVQOR_METRICS_QUEUES = env_list("LEVQOR_METRICS_QUEUES", "celery")
# Alert delivery: a signed JSON webhook (URL and secret both needed) and staff addresses.
LEVQOR_ALERT_WEBHOOK_URL = os.environ.get("LEVQOR_ALERT_WEBHOOK_URL", "")
LEVQOR_ALERT_WEBHOOK_SECRET = os.environ.get("LEVQOR_ALERT_WEBHOOK_SECRET", "")
LEVQOR_ALERT_EMAILS = env_list("LEVQOR_ALERT_EMAILS", "")
# A tenant whose 5xx share over 5 minutes is above this, with at least the minimum number
# of requests, gets a metrics.error_rate alert (at most one per hour).
LEVQOR_ALERT_ERROR_RATE = float(os.environ.get("LEVQOR_ALERT_ERROR_RATE", "0.05"))
LEVQOR_ALERT_ERROR_MIN_REQUESTS = int(os.environ.get("LEVQOR_ALERT_ERROR_MIN_REQUESTS", "100"))
# A provisioning slower than this many seconds raises provisioning.slow for staff.
LEVQOR_ALERT_PROVISION_SECONDS = float(os.environ.get("LEVQOR_ALERT_PROVISION_SECONDS", "120"))
# Who gets the weekly pulse (default: the staff alert addresses).
LEVQOR_PULSE_EMAILS = env_list("LEVQOR_PULSE_EMAILS", ",".join(LEVQOR_ALERT_EMAILS))
# Days without a request after which the daily task hibernates a tenant.
LEVQOR_HIBERNATE_AFTER_DAYS = float(os.environ.get("LEVQOR_HIBERNATE_AFTER_DAYS", "14"))
# DR coverage on /staff/kpis: an OK backup younger than this many hours counts as fresh.
LEVQOR_KPI_BACKUP_FRESH_HOURS = float(os.environ.get("LEVQOR_KPI_BACKUP_FRESH_HOURS", "26"))
# Auto-heal (runtime/autoheal.py): off entirely, or some playbooks off fleet-wide ("*": all);
# staff can also switch playbooks off per tenant or for the fleet in the admin.
LEVQOR_AUTOHEAL_ENABLED = env_bool("LEVQOR_AUTOHEAL_ENABLED", True)
LEVQOR_AUTOHEAL_DISABLED = env_list("LEVQOR_AUTOHEAL_DISABLED", "")
# A workflow run `running` for longer than this is stuck: failed and run again.
LEVQOR_AUTOHEAL_STUCK_MINUTES = float(os.environ.get("LEVQOR_AUTOHEAL_STUCK_MINUTES", "30"))
LEVQOR_AUTOHEAL_MAX_REQUEUE = int(os.environ.get("LEVQOR_AUTOHEAL_MAX_REQUEUE", "100"))

# Circuit breakers around outbound dependencies (runtime/breakers.py): this many consecutive
# failures, the first within the window, open a breaker; after the cool-down one probe call
# goes through and its success closes it.
LEVQOR_BREAKER_FAILURES = int(os.environ.get("LEVQOR_BREAKER_FAILURES", "5"))
LEVQOR_BREAKER_WINDOW_SECONDS = float(os.environ.get("LEVQOR_BREAKER_WINDOW_SECONDS", "60"))
LEVQOR_BREAKER_COOLDOWN_SECONDS = float(os.environ.get("LEVQOR_BREAKER_COOLDOWN_SECONDS", "30"))
# Per-tenant cost model of the gross margin KPI (runtime/kpis.py), in the billing currency:
# a month of a schema-per-tenant tenant's share of the platform database, a month of a
# dedicated tenant database, a GB-month of storage (backups + metered storage), and a
# million requests served (compute).
LEVQOR_COST_SCHEMA_TENANT_MONTH = float(os.environ.get("LEVQOR_COST_SCHEMA_TENANT_MONTH", "2.00"))
LEVQOR_COST_DATABASE_TENANT_MONTH = float(os.environ.get("LEVQOR_COST_DATABASE_TENANT_MONTH", "60.00"))
LEVQOR_COST_STORAGE_GB_MONTH = float(os.environ.get("LEVQOR_COST_STORAGE_GB_MONTH", "0.10"))
LEVQOR_COST_MILLION_REQUESTS = float(os.environ.get("LEVQOR_COST_MILLION_REQUESTS", "1.50"))
# Autoscale caps (runtime/capacity.py): a plan's `queue_share` is a percent of this many
# waiting tasks; past its share a tenant's further tasks wait in its own holding list.
# Tenants on plans with the `dedicated_workers` feature get their own Celery queue,
# `tenant-<id>`, served by a worker pool of their own (`celery -A levqor worker -Q tenant-<id>`,
# see docs/deploy.md); off: every tenant shares the default queue.
LEVQOR_DEDICATED_QUEUES = env_bool("LEVQOR_DEDICATED_QUEUES", False)
LEVQOR_QUEUE_CAPACITY = int(os.environ.get("LEVQOR_QUEUE_CAPACITY", "1000"))
# A slot of a tenant's worker pool is a lease of this many seconds (at least a task's time
# limit), so a worker that dies holding one frees it by itself.
LEVQOR_POOL_SLOT_SECONDS = int(os.environ.get("LEVQOR_POOL_SLOT_SECONDS", "3600"))

# Federation hub (federation/): a benchmark bucket is published only when at least this many
# opted-in tenants contribute to it; never below 5, whatever the environment says.
LEVQOR_FEDERATION_K = max(5, int(os.environ.get("LEVQOR_FEDERATION_K", "5")))
# Differential privacy: the epsilon one release may spend (split over every figure a tenant
# feeds), and the cap on the sum over all releases; past it the aggregation refuses.
LEVQOR_FEDERATION_EPSILON = float(os.environ.get("LEVQOR_FEDERATION_EPSILON", "1.0"))
LEVQOR_FEDERATION_EPSILON_CAP = float(os.environ.get("LEVQOR_FEDERATION_EPSILON_CAP", "12.0"))

# Marketplace (marketplace/): an org owner or admin may refund a paid one-off module
# within this many days of paying (staff may refund any time from the admin).
LEVQOR_MARKETPLACE_REFUND_DAYS = int(os.environ.get("LEVQOR_MARKETPLACE_REFUND_DAYS", "14"))

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True
STATIC_URL = "/static/"
STATIC_ROOT = BASE_DIR / "staticfiles"
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
DATA_UPLOAD_MAX_MEMORY_SIZE = LEVQOR_MAX_BODY_BYTES

SESSION_COOKIE_SECURE = not DEBUG and env_bool("DJANGO_SECURE_COOKIES", True)
CSRF_COOKIE_SECURE = SESSION_COOKIE_SECURE

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s %(message)s"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "root": {"handlers": ["console"], "level": os.environ.get("LEVQOR_LOG_LEVEL", "INFO")},
    # 4xx answers are the API working as designed (and a flood of 429s under attack);
    # django.request logs only server errors.
    "loggers": {"django.db.backends": {"level": "WARNING"}, "django.request": {"level": "ERROR"},
                "stripe": {"level": "WARNING"}},
}
