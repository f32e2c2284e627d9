"""Shared shape of the migration plan's commands (tenancy_m1 ... tenancy_drop_legacy)."""
from django.core.management.base import BaseCommand, CommandError

from tenants import migration_plan
from tenants.progress import ProgressBar


class TenancyStepCommand(BaseCommand):
    """Runs one step of tenants/migration_plan.py: `--dry-run` prints what it would do."""

    step = None  # a function of migration_plan

    def add_arguments(self, parser):
        parser.add_argument("--dry-run", action="store_true", help="Print what the step would do; change nothing.")

    def handle(self, *args, **options):
        dry_run = options["dry_run"]
        try:
            report = type(self).step(dry_run=dry_run, actor="staff:cli", progress=self._progress)
        except migration_plan.PlanRefused as exc:
            raise CommandError(str(exc)) from None
        self._print(report)

    def _progress(self, total: int, label: str):
        return ProgressBar(total, label=label, stream=self.stdout)

    def _print(self, report):
        name = report.step.upper()
        for note in report.notes:
            self.stdout.write(f"{name}: {note}")
        if not report.changed:
            self.stdout.write(f"{name}: nothing to do.")
            return
        self.stdout.write(f"{name}{' (dry run, nothing changed)' if report.dry_run else ''}: "
                          f"{'would' if report.dry_run else 'did'}:")
        for action in report.actions:
            self.stdout.write(f"  - {action}")
        if report.owner_key:
            self.stdout.write(f"Owner API key of levqor-main (shown once): {report.owner_key}")
