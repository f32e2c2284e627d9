from django.apps import AppConfig


class BillingConfig(AppConfig):
    name = "billing"
    verbose_name = "Billing"

    def ready(self):
        from billing.provisioning import register
        from billing.services import move_subscription_to_plan
        from tenants.services import register_plan_change_hook

        register()
        register_plan_change_hook(move_subscription_to_plan)
