import json

from django.core.management.base import BaseCommand, CommandError

from billing import stripe_api
from levqor.errors import APIError
from tenants.progress import ProgressBar


class Command(BaseCommand):
    help = "Compare Stripe's meter totals for a period with the usage Levqor reported; alert on any drift."

    def add_arguments(self, parser):
        parser.add_argument("--period", help="YYYYMM (default: this month)")

    def handle(self, *args, **options):
        from billing import usage

        if not stripe_api.enabled():
            raise CommandError("billing is not configured: set STRIPE_SECRET_KEY")
        bar = None

        def progress(done, total):
            nonlocal bar
            bar = bar or ProgressBar(total, label="tenants", stream=self.stderr)
            bar.advance(done - bar.done)

        try:
            result = usage.reconcile(period=options["period"], progress=progress)
        except APIError as exc:
            raise CommandError(f"{exc.code}: {exc.message}") from None
        if bar:
            bar.finish()
        self.stdout.write(json.dumps(result))
        if result["drifts"]:
            raise CommandError(f"{len(result['drifts'])} drifts found (alerts raised)")
