from django.apps import AppConfig


class TenantsConfig(AppConfig):
    name = "tenants"
    verbose_name = "Tenants"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self):
        # The provisioning steps this app owns; apps above register theirs in their own ready().
        from tenants import provisioning  # noqa: F401
