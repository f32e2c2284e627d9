from django.apps import AppConfig


class WorkflowsConfig(AppConfig):
    name = "workflows"
    verbose_name = "Workflows"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self):
        from tenants.provisioning import register_pack
        from workflows.packs import install_starter_pack

        register_pack("starter", install_starter_pack)
