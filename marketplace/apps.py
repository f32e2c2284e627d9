from django.apps import AppConfig


class MarketplaceConfig(AppConfig):
    name = "marketplace"
    verbose_name = "Marketplace (listings, tenant orders, partner payouts)"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self):
        from marketplace import selectors, webhooks
        from tenants.context import register_feature_source

        # A paid module's feature flags join its tenant's context (and so the policy engine).
        register_feature_source(selectors.granted_features)
        webhooks.register()
