"""The control plane's tenancy tables, all in the public schema.

Table names follow the spec (tenants, tenant_keys, tenant_users, tenant_billing,
tenant_runtime); tenant_audit lives in compliance.
"""
from __future__ import annotations

from django.conf import settings
from django.db import models
from django_tenants.models import DomainMixin, TenantMixin

from tenants.scoping import TenantScopedModel

ROLES = ("owner", "admin", "operator", "auditor", "viewer")
ROLE_CHOICES = [(role, role) for role in ROLES]


class Tenant(TenantMixin):
    class Status(models.TextChoices):
        PROVISIONING = "provisioning"
        ACTIVE = "active"
        SUSPENDED = "suspended"
        DELETING = "deleting"
        DELETED = "deleted"

    class Isolation(models.TextChoices):
        SCHEMA = "schema"
        DATABASE = "database"

    name = models.CharField(max_length=200)
    slug = models.SlugField(max_length=40, unique=True)
    region = models.CharField(max_length=64)
    plan = models.CharField(max_length=32)
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.PROVISIONING, db_index=True)
    isolation = models.CharField(max_length=16, choices=Isolation.choices, default=Isolation.SCHEMA)
    admin_email = models.EmailField(blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    provision_ms = models.PositiveIntegerField(null=True, blank=True)
    # Which provisioning steps finished, with their duration: {"step": ms, ...}.
    provision_steps = models.JSONField(default=dict, blank=True)
    status_changed_at = models.DateTimeField(null=True, blank=True)
    purge_after = models.DateTimeField(null=True, blank=True)
    # Written by the batched metrics flush, at most once per few minutes (runtime/metrics.py).
    last_seen_at = models.DateTimeField(null=True, blank=True)
    # Set by the daily hibernation task; the tenant middleware clears it on the next request.
    hibernated_at = models.DateTimeField(null=True, blank=True)

    # Schemas and databases are created and dropped by the provisioning steps and the
    # purge task, never as a side effect of saving or deleting a row.
    auto_create_schema = False
    auto_drop_schema = False

    class Meta:
        db_table = "tenants"

    def __str__(self) -> str:
        return self.slug

    @property
    def is_usable(self) -> bool:
        return self.status == self.Status.ACTIVE


class Domain(DomainMixin):
    verified = models.BooleanField(default=True)

    class Meta:
        db_table = "tenant_domains"


class TenantKey(TenantScopedModel):
    """A tenant API key. Only a keyed hash is stored; the key is shown once."""

    tenant = models.ForeignKey(Tenant, on_delete=models.CASCADE, related_name="keys")
    prefix = models.CharField(max_length=16, unique=True)
    api_key_hash = models.CharField(max_length=64)
    role = models.CharField(max_length=16, choices=ROLE_CHOICES)
    name = models.CharField(max_length=100, blank=True)
    created_by = models.CharField(max_length=200, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    last_used_at = models.DateTimeField(null=True, blank=True)
    revoked_at = models.DateTimeField(null=True, blank=True)

    class Meta(TenantScopedModel.Meta):
        db_table = "tenant_keys"

    def __str__(self) -> str:
        return f"{self.prefix} ({self.role})"


class PlatformKey(models.Model):
    """A platform staff key: acts across tenants on platform routes only."""

    name = models.CharField(max_length=100, unique=True)
    prefix = models.CharField(max_length=16, unique=True)
    api_key_hash = models.CharField(max_length=64)
    created_at = models.DateTimeField(auto_now_add=True)
    last_used_at = models.DateTimeField(null=True, blank=True)
    revoked_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        db_table = "platform_keys"

    def __str__(self) -> str:
        return f"{self.name} ({self.prefix})"


class TenantUser(TenantScopedModel):
    tenant = models.ForeignKey(Tenant, on_delete=models.CASCADE, related_name="members")
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="tenant_memberships")
    class WorkflowScope(models.TextChoices):
        ALL = "all"  # the role decides for every workflow
        GRANTED = "granted"  # only workflows granted to this member (django-guardian)

    role = models.CharField(max_length=16, choices=ROLE_CHOICES)
    workflow_scope = models.CharField(max_length=16, choices=WorkflowScope.choices, default=WorkflowScope.ALL)
    sso_id = models.CharField(max_length=255, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta(TenantScopedModel.Meta):
        db_table = "tenant_users"
        constraints = [models.UniqueConstraint(fields=["tenant", "user"], name="tenant_user_once")]


class TenantBilling(TenantScopedModel):
    """The tenant's Stripe customer and subscription, and where its payments stand."""

    class Status(models.TextChoices):
        NONE = "none"  # billing not configured when the tenant was provisioned
        ACTIVE = "active"
        PAST_DUE = "past_due"  # a payment failed; the tenant works until grace_until
        CANCELED = "canceled"

    tenant = models.OneToOneField(Tenant, on_delete=models.CASCADE, related_name="billing")
    stripe_customer_id = models.CharField(max_length=64, blank=True, db_index=True)
    stripe_subscription_id = models.CharField(max_length=64, blank=True, db_index=True)
    plan = models.CharField(max_length=32)
    # The last usage reported to Stripe per metric: {"api_calls": {"period", "reported", "window"}}.
    metered_usage_json = models.JSONField(default=dict, blank=True)
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.NONE)
    payment_failed_at = models.DateTimeField(null=True, blank=True)
    grace_until = models.DateTimeField(null=True, blank=True)
    # True while the tenant is suspended because of billing (a payment resumes it).
    suspended_for_billing = models.BooleanField(default=False)
    current_period_end = models.DateTimeField(null=True, blank=True)
    updated_at = models.DateTimeField(auto_now=True, null=True)

    class Meta(TenantScopedModel.Meta):
        db_table = "tenant_billing"


class TenantRuntime(TenantScopedModel):
    tenant = models.OneToOneField(Tenant, on_delete=models.CASCADE, related_name="runtime")
    env_json = models.JSONField(default=dict, blank=True)
    limits_json = models.JSONField(default=dict, blank=True)
    domain = models.CharField(max_length=253, blank=True)
    last_deploy_at = models.DateTimeField(null=True, blank=True)

    class Meta(TenantScopedModel.Meta):
        db_table = "tenant_runtime"


class TenantDatabase(TenantScopedModel):
    """Where a database-per-tenant tenant's data lives. The DSN is encrypted at rest."""

    tenant = models.OneToOneField(Tenant, on_delete=models.CASCADE, related_name="database")
    region = models.CharField(max_length=64)
    name = models.CharField(max_length=63, unique=True)
    dsn_encrypted = models.TextField()
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta(TenantScopedModel.Meta):
        db_table = "tenant_databases"


class Invitation(TenantScopedModel):
    """An invitation to join a tenant. The link carries a signed id; it is single-use
    (accepted_at) and expires (INVITATION_DAYS)."""

    tenant = models.ForeignKey(Tenant, on_delete=models.CASCADE, related_name="invitations")
    email = models.EmailField()
    role = models.CharField(max_length=16, choices=ROLE_CHOICES)
    invited_by = models.CharField(max_length=200)
    created_at = models.DateTimeField(auto_now_add=True)
    accepted_at = models.DateTimeField(null=True, blank=True)
    revoked_at = models.DateTimeField(null=True, blank=True)

    class Meta(TenantScopedModel.Meta):
        db_table = "tenant_invitations"


class TenantSSO(TenantScopedModel):
    """A tenant's identity provider (OIDC or SAML 2.0). The OIDC client secret is stored
    encrypted. Logins through it create members of this tenant only."""

    class Protocol(models.TextChoices):
        OIDC = "oidc"
        SAML = "saml"

    tenant = models.OneToOneField(Tenant, on_delete=models.CASCADE, related_name="sso")
    protocol = models.CharField(max_length=8, choices=Protocol.choices, default=Protocol.OIDC)
    issuer = models.URLField(max_length=500, blank=True)  # OIDC issuer, or the SAML IdP's entity id
    client_id = models.CharField(max_length=255, blank=True)  # OIDC
    client_secret_encrypted = models.TextField(blank=True)  # OIDC
    idp_metadata_xml = models.TextField(blank=True)  # SAML: the IdP's metadata as uploaded
    default_role = models.CharField(max_length=16, choices=ROLE_CHOICES, default="viewer")
    group_roles = models.JSONField(default=dict, blank=True)  # {"idp-group": "role"}
    enabled = models.BooleanField(default=False)
    enforced = models.BooleanField(default=False)  # members must sign in through the IdP
    tested_at = models.DateTimeField(null=True, blank=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta(TenantScopedModel.Meta):
        db_table = "tenant_sso"

    @property
    def provider_id(self) -> str:
        return f"tenant-{self.tenant.slug}"


class TenantMigrationScript(models.Model):
    """The SQL one tenant-app migration ran on the template schema, kept so the fleet can
    replay it per tenant instead of loading Django's migration graph for each."""

    app = models.CharField(max_length=100)
    name = models.CharField(max_length=255)
    statements = models.JSONField(default=list)  # [[sql, params], ...]
    replayable = models.BooleanField(default=False)  # schema operations only, no RunPython
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        db_table = "tenant_migration_scripts"
        constraints = [models.UniqueConstraint(fields=["app", "name"], name="migration_script_once")]


class FleetMigrationStatus(models.Model):
    """Per-tenant result of the last fleet migration (`manage.py fleet_status`)."""

    tenant = models.OneToOneField(Tenant, on_delete=models.CASCADE, related_name="migration_status")
    status = models.CharField(max_length=16)  # pending | running | up_to_date | replayed | migrated | failed
    applied = models.JSONField(default=list)
    error = models.TextField(blank=True)
    seconds = models.FloatField(default=0)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        db_table = "tenant_fleet_migration_status"


class TenancyMigrationStep(models.Model):
    """One step of the migration from the single-tenant layout (M1-M4, rollback, drop).

    `done_at` is when the step last completed; a rollback clears M2-M4 so the plan can be
    run forward again. `details` keeps what the step found and did (counts, checksums,
    history), for the runbook's status output. See tenants/legacy.py.
    """

    step = models.CharField(max_length=16, unique=True)
    done_at = models.DateTimeField(null=True, blank=True)
    details = models.JSONField(default=dict, blank=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        db_table = "tenancy_migration_state"

    def __str__(self) -> str:
        return f"{self.step}: {self.done_at or 'not done'}"
