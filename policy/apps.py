from django.apps import AppConfig


class PolicyConfig(AppConfig):
    name = "policy"
    verbose_name = "Policy"

    def ready(self):
        # Load and validate the policy file at start-up: a broken file stops the process
        # with its line and reason instead of silently allowing anything.
        from policy.engine import get_policy

        get_policy()
