from django.core.management.base import BaseCommand, CommandError

from levqor.errors import APIError
from marketplace import payouts
from tenants.progress import ProgressBar


class Command(BaseCommand):
    help = ("Pay marketplace partners for a month (Stripe Connect transfers: sales minus refunds minus the platform "
            "fee, rounded down), then reconcile against Stripe's transfers. Re-running never pays twice.")

    def add_arguments(self, parser):
        parser.add_argument("--period", help="YYYY-MM (default: the month just ended)")
        parser.add_argument("--no-reconcile", action="store_true", help="skip the reconciliation with Stripe")

    def handle(self, *args, **options):
        period = options["period"] or payouts.previous_period()
        try:
            payouts.parse_period(period)
            partners = payouts.partners_to_pay()
            bar = ProgressBar(len(partners), label=f"partners ({period})", stream=self.stderr)
            report = payouts.run_period(period, partners=partners, progress=bar.advance)
            bar.finish()
        except APIError as exc:
            raise CommandError(exc.message) from exc
        for kind in ("sent", "skipped", "failed", "nothing_due"):
            for row in getattr(report, kind):
                self.stdout.write(f"{kind:12} {row['partner']:20} {row['currency']} net {row['net_cents']} "
                                  f"fee {row['fee_cents']} {row.get('transfer') or row.get('error') or ''}")
        self.stdout.write(f"period {period}: {len(report.sent)} sent, {len(report.skipped)} already sent, "
                          f"{len(report.failed)} failed")
        if not options["no_reconcile"]:
            rec = payouts.reconcile()
            self.stdout.write(f"reconciled: {rec['matched']} matched, {rec['adopted']} adopted, "
                              f"{len(rec['drift'])} drift")
            for drift in rec["drift"]:
                self.stderr.write(f"DRIFT {drift['partner']} payout {drift['payout']}: {drift['problem']}")
        if report.failed:
            raise CommandError(f"{len(report.failed)} payout(s) failed; they are retried by the next run")
