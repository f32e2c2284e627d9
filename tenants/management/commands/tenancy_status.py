from django.core.management.base import BaseCommand

from tenants import migration_plan


class Command(BaseCommand):
    help = "Where the migration to multi-tenancy stands: the recorded steps and where levqor-main lives."

    def handle(self, *args, **options):
        state = migration_plan.status()
        for step, done_at in state.pop("steps").items():
            self.stdout.write(f"{step:10} {done_at:%Y-%m-%d %H:%M:%S} UTC" if done_at else f"{step:10} not done")
        for key, value in state.items():
            self.stdout.write(f"{key}: {value}")
