from django.core.management.base import BaseCommand

from tenants.models import FleetMigrationStatus


class Command(BaseCommand):
    help = "The per-tenant result of the last fleet migration (failures first)."

    def add_arguments(self, parser):
        parser.add_argument("--all", action="store_true", help="List every tenant, not only failures.")

    def handle(self, *args, **options):
        rows = FleetMigrationStatus.objects.select_related("tenant").order_by("status", "tenant__slug")
        counts = {}
        for row in rows:
            counts[row.status] = counts.get(row.status, 0) + 1
        self.stdout.write("  ".join(f"{status}: {count}" for status, count in sorted(counts.items())) or "No runs yet.")
        for row in rows:
            if options["all"] or row.status == "failed":
                applied = ", ".join(f"{app}.{name}" for app, name in row.applied) or "-"
                self.stdout.write(f"{row.tenant.slug:<40} {row.status:<10} {row.seconds:>7.3f}s  {applied}  {row.error}")
