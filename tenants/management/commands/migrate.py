"""`manage.py migrate`: the whole platform, in one command.

1. the shared apps in the public schema (Django's own migrate);
2. the tenant blueprint: the template schema and the template database of each region
   server, with the tenant apps only;
3. every tenant schema and database that is behind the blueprint, skipped cheaply when
   it is not.
"""
from django.conf import settings
from django.core.management.base import CommandError
from django.core.management.commands.migrate import Command as DjangoMigrate
from django.db import connection

from tenants import blueprint, fleet


class Command(DjangoMigrate):
    help = "Migrate the public schema, the tenant blueprint and every tenant that is behind."

    def add_arguments(self, parser):
        super().add_arguments(parser)
        parser.add_argument("--shared-only", action="store_true", help="Only the public schema.")
        parser.add_argument("--fleet-workers", type=int, default=2, help="Tenants migrated in parallel after the canaries.")
        parser.add_argument("--canary", type=int, default=None, help="Tenants migrated first, one by one (default 1 %%).")

    def handle(self, *args, **options):
        connection.set_schema_to_public()
        super().handle(*args, **options)
        if options["shared_only"] or options.get("database", "default") != "default":
            return
        verbosity = options["verbosity"]
        applied = blueprint.migrate_template_schema(verbosity=verbosity)
        if verbosity:
            self.stdout.write(f"Template schema {settings.LEVQOR_TEMPLATE_SCHEMA}: {applied} migrations applied.")
        servers = {}
        for region in settings.LEVQOR_REGIONS.values():
            key = (region.database.get("HOST"), region.database.get("PORT"))
            servers.setdefault(key, region.name)
        for region_name in servers.values():
            applied = blueprint.migrate_template_database(region=region_name, verbosity=verbosity)
            if verbosity:
                self.stdout.write(f"Template database ({region_name}): {applied} migrations applied.")
        try:
            fleet.migrate_fleet(stdout=self.stdout if verbosity else None, workers=options["fleet_workers"],
                                canary=options["canary"])
        except fleet.FleetMigrationFailed as exc:
            raise CommandError(f"{exc} (see manage.py fleet_status; run migrate again to resume)") from None
