from django.contrib import admin
from django.urls import include, path
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerView
from rest_framework.routers import SimpleRouter

from billing import api as billing_api
from billing import portal as billing_portal
from billing import webhooks as billing_webhooks
from compliance import api as compliance_api
from federation import urls as federation_urls
from marketplace import urls as marketplace_urls
from runtime import api as runtime_api
from runtime import portal_backups, urls_metrics
from levqor import health
from tenants import api as tenant_api
from tenants import portal
from tenants import views as tenant_views
from workflows.api import WorkflowViewSet

router = SimpleRouter(trailing_slash=False)
router.register("workflows", WorkflowViewSet, basename="workflow")

api = [
    path("tenants", tenant_api.TenantCollection.as_view(), name="tenant-collection"),
    path("tenants/<int:tenant_id>", tenant_api.TenantDetail.as_view(), name="tenant-detail"),
    path("tenants/<int:tenant_id>/suspend", tenant_api.TenantSuspend.as_view(), name="tenant-suspend"),
    path("tenants/<int:tenant_id>/resume", tenant_api.TenantResume.as_view(), name="tenant-resume"),
    path("tenants/<int:tenant_id>/delete", tenant_api.TenantDelete.as_view(), name="tenant-delete"),
    path("tenants/<int:tenant_id>/rotate-keys", tenant_api.TenantRotateKeys.as_view(), name="tenant-rotate-keys"),
    path("org", tenant_api.OrgDetail.as_view(), name="org"),
    path("org/keys", tenant_api.OrgKeys.as_view(), name="org-keys"),
    path("org/keys/<int:key_id>", tenant_api.OrgKeyDetail.as_view(), name="org-key"),
    path("org/members", tenant_api.OrgMembers.as_view(), name="org-members"),
    path("tenants/<int:tenant_id>/plan", tenant_api.TenantPlan.as_view(), name="tenant-plan"),
    path("org/audit", tenant_api.OrgAudit.as_view(), name="org-audit"),
    path("org/audit/export", tenant_api.OrgAuditExport.as_view(), name="org-audit-export"),
    path("org/integrity", compliance_api.OrgIntegrity.as_view(), name="org-integrity"),
    path("org/evidence", compliance_api.OrgEvidence.as_view(), name="org-evidence"),
    path("org/evidence/<int:report_id>", compliance_api.OrgEvidenceDetail.as_view(), name="org-evidence-detail"),
    path("org/streams", compliance_api.OrgStreams.as_view(), name="org-streams"),
    path("org/streams/<int:stream_id>", compliance_api.OrgStreamDetail.as_view(), name="org-stream"),
    path("org/streams/<int:stream_id>/replay", compliance_api.OrgStreamReplay.as_view(), name="org-stream-replay"),
    path("org/usage", tenant_api.OrgUsage.as_view(), name="org-usage"),
    path("", include(urls_metrics.api_urlpatterns)),
    path("org/backups", runtime_api.OrgBackups.as_view(), name="org-backups-api"),
    path("org/redeploy", runtime_api.OrgRedeploy.as_view(), name="org-redeploy-api"),
    path("org/health", runtime_api.OrgHealth.as_view(), name="org-health-api"),
    path("org/backups/<int:backup_id>", runtime_api.OrgBackupDetail.as_view(), name="org-backup-api"),
    path("org/backups/<int:backup_id>/export", runtime_api.OrgBackupExport.as_view(), name="org-backup-export-api"),
    path("org/backups/<int:backup_id>/restore", runtime_api.OrgBackupRestore.as_view(), name="org-backup-restore-api"),
    path("org/billing", billing_api.OrgBilling.as_view(), name="org-billing"),
    path("org/billing/portal-session", billing_api.OrgBillingPortalSession.as_view(), name="org-billing-portal-session"),
    path("org/policy/simulate", tenant_api.OrgPolicySimulate.as_view(), name="org-policy-simulate"),
    path("", include(federation_urls.api_urlpatterns)),
    path("", include(marketplace_urls.api_urlpatterns)),
    path("schema/", SpectacularAPIView.as_view(), name="schema"),
    path("docs/", SpectacularSwaggerView.as_view(url_name="schema"), name="api-docs"),
    *router.urls,
]

urlpatterns = [
    path("api/", include(api)),
    path("admin/", admin.site.urls),
    path("healthz", health.healthz),
    path("", include(urls_metrics.urlpatterns)),
    path("readyz", health.readyz),
    path("org/bootstrap/<str:token>", tenant_views.bootstrap, name="org-bootstrap"),
    path("org", portal.home, name="org-home"),
    path("org/choose", portal.choose, name="org-choose"),
    path("org/audit", portal.audit_log, name="org-audit-log"),
    path("org/settings/members", portal.members, name="org-members"),
    path("org/settings/plan", portal.plan, name="org-plan"),
    path("org/settings/plan/manage", billing_portal.manage, name="org-plan-manage"),
    path("billing/stripe/webhook", billing_webhooks.stripe_webhook, name="stripe-webhook"),
    path("org/settings/sso", portal.sso_settings, name="org-sso"),
    path("org/settings/limits", portal.limits, name="org-limits"),
    path("org/settings/backups", portal_backups.page, name="org-backups"),
    path("org/settings/backups/create", portal_backups.create, name="org-backup-create"),
    path("org/settings/backups/export", portal_backups.export, name="org-backup-export"),
    path("org/settings/backups/restore", portal_backups.restore, name="org-backup-restore"),
    path("backups/<str:token>", runtime_api.backup_download, name="backup-download"),
    path("org/settings/streams", portal.streams, name="org-streams"),
    path("org/sso/<slug:slug>", portal.sso_login, name="org-sso-login"),
    path("org/actions/rotate-keys", portal.rotate_keys, name="org-rotate-keys"),
    path("org/actions/redeploy", portal_backups.redeploy, name="org-redeploy"),
    path("org/actions/integrity", portal.run_integrity, name="org-integrity-run"),
    path("org/actions/evidence", portal.generate_evidence, name="org-evidence-generate"),
    path("org/invite/<str:token>", portal.accept_invitation, name="org-invite"),
    path("accounts/", include("allauth.urls")),
    path("docs/multitenancy", tenant_views.multitenancy_docs, name="docs-multitenancy"),
    path("", include(federation_urls.urlpatterns)),  # /insights/benchmarks, /org/insights
    path("", include(marketplace_urls.urlpatterns)),  # /marketplace, /staff/marketplace
    path("evidence/<str:token>", compliance_api.evidence_download, name="evidence-download"),
    path("", tenant_views.landing, name="landing"),
]

handler400 = "levqor.errors.handler400"
handler403 = "levqor.errors.handler403"
handler404 = "levqor.errors.handler404"
handler500 = "levqor.errors.handler500"
