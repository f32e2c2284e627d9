from django.core.management.base import BaseCommand, CommandError

from billing import stripe_api
from levqor.errors import APIError


class Command(BaseCommand):
    help = "Create or update Levqor's plans, meters and prices at Stripe (idempotent)."

    def handle(self, *args, **options):
        from billing.catalog import sync_catalog

        if not stripe_api.enabled():
            raise CommandError("billing is not configured: set STRIPE_SECRET_KEY")
        try:
            report = sync_catalog()
        except APIError as exc:
            raise CommandError(f"{exc.code}: {exc.message}") from None
        for verb in ("created", "updated", "unchanged"):
            for name in report[verb]:
                self.stdout.write(f"{verb:9} {name}")
        self.stdout.write(self.style.SUCCESS(
            f"catalog synced: {len(report['created'])} created, {len(report['updated'])} updated, "
            f"{len(report['unchanged'])} unchanged"))
