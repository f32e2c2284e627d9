import json
from datetime import date

from django.core.management.base import BaseCommand, CommandError

from billing import stripe_api
from levqor.errors import APIError
from tenants.progress import ProgressBar


class Command(BaseCommand):
    help = ("Report a day's usage of every billed tenant to Stripe's meters (default: yesterday, UTC). "
            "Safe to re-run: a window already reported is skipped, an interrupted one is resent with the same "
            "identifiers.")

    def add_arguments(self, parser):
        parser.add_argument("--date", help="the UTC day to report, YYYY-MM-DD (default: yesterday)")
        parser.add_argument("--tenant", action="append", type=int, help="only this tenant id (repeatable)")
        parser.add_argument("--reconcile", action="store_true", help="then compare Stripe's totals with the ledger")

    def handle(self, *args, **options):
        from billing import usage

        if not stripe_api.enabled():
            raise CommandError("billing is not configured: set STRIPE_SECRET_KEY")
        try:
            window = date.fromisoformat(options["date"]) if options["date"] else None
        except ValueError:
            raise CommandError("--date must be YYYY-MM-DD") from None
        bar = None

        def progress(done, total):
            nonlocal bar
            if bar is None:
                bar = ProgressBar(total, label="meter events", stream=self.stderr)
            else:
                bar.advance(done - bar.done)

        try:
            result = usage.sync_usage(window=window, tenant_ids=options["tenant"], progress=progress)
            if bar:
                bar.finish()
            self.stdout.write(json.dumps(result))
            if options["reconcile"]:
                self.stdout.write(json.dumps(usage.reconcile(period=result["window"].replace("-", "")[:6],
                                                             tenant_ids=options["tenant"])))
        except APIError as exc:
            raise CommandError(f"{exc.code}: {exc.message}") from None
        if result["failed"]:
            raise CommandError(f"{result['failed']} meter events failed; re-run to resend them: {result['errors']}")
