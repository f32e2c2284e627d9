from django.core.management.base import BaseCommand

from tenants.models import FleetMigrationStatus


class Command(BaseCommand):
    help = ("The per-tenant result of the last fleet migration (failures first). Tenants found current "
            "by the last run have no row; `pending` ones never started, `running` ones were cut off.")

    def add_arguments(self, parser):
        parser.add_argument("--all", action="store_true", help="List every tenant, not only failures.")
        parser.add_argument("--status", action="append", default=[], metavar="STATUS",
                            help="List the tenants with this status (repeatable), e.g. --status pending.")

    def handle(self, *args, **options):
        rows = FleetMigrationStatus.objects.select_related("tenant").order_by("status", "tenant__slug")
        counts = {}
        for row in rows:
            counts[row.status] = counts.get(row.status, 0) + 1
        self.stdout.write("  ".join(f"{status}: {count}" for status, count in sorted(counts.items()))
                          or "No tenant was behind in the last run (or no run yet).")
        never_started = counts.get("pending", 0)
        if never_started:
            self.stdout.write(f"{never_started} tenants never started: run manage.py migrate again to resume "
                              f"(list them with --status pending).")
        wanted = set(options["status"]) or {"failed", "running"}
        for row in rows:
            if options["all"] or row.status in wanted:
                applied = ", ".join(f"{app}.{name}" for app, name in row.applied) or "-"
                self.stdout.write(f"{row.tenant.slug:<40} {row.status:<10} {row.seconds:>7.3f}s  {applied}  {row.error}")
