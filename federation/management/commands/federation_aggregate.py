from django.core.management.base import BaseCommand, CommandError

from federation.aggregate import BudgetExhausted, aggregate
from tenants.progress import ProgressBar


class Command(BaseCommand):
    help = "Publish a federation release (anonymized, k-thresholded, differentially private benchmarks)."

    def add_arguments(self, parser):
        parser.add_argument("--period", help="YYYYMM (default: the last full month)")

    def handle(self, *args, period=None, **options):
        try:
            release = aggregate(period, progress_factory=lambda n: ProgressBar(n, label="tenants", stream=self.stderr))
        except (BudgetExhausted, ValueError) as exc:
            raise CommandError(str(exc)) from None
        buckets = sum(len(b) for b in release.payload["groups"].values())
        self.stdout.write(f"release {release.pk} for {release.period}: {buckets} buckets published, "
                          f"epsilon {release.epsilon:.4g}")
