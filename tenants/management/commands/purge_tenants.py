from django.core.management.base import BaseCommand

from tenants.tasks import purge_due_tenants


class Command(BaseCommand):
    help = "Purge tenants whose deletion grace period is over (the hourly task does the same)."

    def handle(self, *args, **options):
        purged = purge_due_tenants()
        self.stdout.write(f"Purged {len(purged)} tenants: {', '.join(purged) or '-'}")
