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
    "DEFAULT_PAGINATION_CLASS": "rest_framework.pagination.LimitOffsetPagination",
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
CELERY_BEAT_SCHEDULE = {
    "purge-deleted-tenants": {"task": "tenants.tasks.purge_deleted_tenants", "schedule": 3600.0},
    "flush-usage": {"task": "policy.tasks.flush_usage", "schedule": 60.0},
    "reap-stalled-provisioning": {"task": "tenants.tasks.reap_stalled_provisioning", "schedule": 300.0},
    "audit-retention": {"task": "compliance.tasks.audit_retention", "schedule": 86400.0},
    "sweep-audit-streams": {"task": "compliance.tasks.sweep_streams", "schedule": 60.0},
    # Nightly billing, after midnight UTC: usage to Stripe, then reconciliation, then Notion.
    "billing-nightly": {"task": "billing.tasks.nightly", "schedule": crontab(minute=30, hour=0)},
    "billing-grace": {"task": "billing.tasks.enforce_grace", "schedule": 3600.0},
    "nightly-backups": {"task": "runtime.backup_tasks.nightly_backups", "schedule": crontab(minute=0, hour=2)},
    "backup-retention": {"task": "runtime.backup_tasks.backup_retention", "schedule": 3600.0},
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
