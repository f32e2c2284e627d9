from django.apps import AppConfig


class FederationConfig(AppConfig):
    name = "federation"
    verbose_name = "Federation hub (anonymized industry benchmarks)"
    default_auto_field = "django.db.models.BigAutoField"
