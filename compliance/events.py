"""The audit event registry: every event name Levqor writes, declared once.

Names are a public contract (API.md): add, never rename or reuse. To add one, append
it here with a one-line description and document it in API.md.
"""
EVENTS: dict[str, str] = {
    "tenant.created": "a tenant finished provisioning",
    "tenant.suspended": "staff suspended the tenant",
    "tenant.resumed": "staff resumed the tenant",
    "tenant.deleted": "the tenant was deleted (soft, then purged after the grace period)",
    "keys.rotated": "every key was revoked and a new owner key issued",
    "key.created": "an API key was created",
    "key.revoked": "an API key was revoked",
    "member.invited": "a member was invited",
    "member.role_changed": "a member's role changed",
    "member.removed": "a member was removed",
    "policy.deny": "the policy engine refused an action",
    "security.cross_tenant_attempt": "a credential of another tenant was used on this tenant",
    "auth.login": "a user logged in",
    "auth.login_failed": "a login failed",
    "sso.configured": "SSO settings changed",
    "plan.changed": "the plan changed",
    "backup.created": "a backup was taken",
    "backup.exported": "a backup was downloaded",
    "backup.restored": "a backup was restored",
    "dr.failover": "the region failed over to its replica",
    "data.exported": "audit or tenant data was exported",
    "config.changed": "tenant configuration changed",
    "quota.warning": "a metered quota passed 80 % of the plan's limit this period",
    "integrity.checked": "the Integrity Pack ran (metadata: overall status)",
    "evidence.generated": "an Evidence PDF was generated",
    "billing.subscription_updated": "Stripe reported a subscription change (plan, status or period)",
    "billing.subscription_canceled": "the Stripe subscription was canceled; the grace period started",
    "billing.payment_failed": "a payment failed; the grace period started (metadata: grace_until)",
    "billing.payment_succeeded": "an invoice was paid; any grace period ended",
    "billing.portal_opened": "an org admin opened the Stripe Customer Portal",
    "federation.opted_in": "the organization chose to contribute to the anonymized benchmarks (metadata: industry)",
    "federation.opted_out": "the organization stopped contributing to the benchmarks (from the next release)",
    "runtime.autoheal": "an auto-heal playbook acted on an anomaly (metadata: playbook, anomaly_id, metric, action)",
    "marketplace.order_created": "an org admin placed a marketplace order (pending until Stripe confirms payment)",
    "marketplace.order_paid": "Stripe confirmed a marketplace order's payment",
    "marketplace.order_failed": "a marketplace order's payment failed; nothing was enabled",
    "marketplace.order_canceled": "a marketplace order was canceled (checkout expired or canceled, or subscription ended)",
    "marketplace.order_refunded": "a marketplace order was refunded in full",
    "marketplace.module_enabled": "a bought module was enabled for this organization (metadata: features, packs)",
    "marketplace.module_disabled": "a module was disabled after a refund or cancellation (metadata: features, packs)",
    "tenancy.migration_step": "a step of the migration to multi-tenancy ran (metadata: step m1-m4, rollback or drop)",
    "tenancy.legacy_imported": "M3 moved a single-tenant table under the organization (metadata: table, rows, checksum)",
    "storage.expired": "stored files passed the plan's retention and were deleted (metadata: backups, evidence_reports, bytes)",
}


class UnknownAuditEvent(ValueError):
    pass


def check(event: str) -> str:
    if event not in EVENTS:
        raise UnknownAuditEvent(f"{event!r} is not in compliance.events.EVENTS")
    return event
