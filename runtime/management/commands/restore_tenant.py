from django.core.management.base import BaseCommand, CommandError

from levqor.errors import APIError
from tenants.progress import ProgressBar


class Command(BaseCommand):
    help = ("Restore a backup into staging and verify it (row counts, checksums, migration level); with --replace, "
            "then make it the tenant's live data (what it replaces is backed up first).")

    def add_arguments(self, parser):
        parser.add_argument("backup", type=int, help="backup id")
        parser.add_argument("--into-staging", action="store_true", help="only restore into staging and verify (default)")
        parser.add_argument("--replace", action="store_true", help="after verifying, replace the live data")

    def handle(self, *args, **options):
        from runtime import backups
        from runtime.models import Backup

        if options["into_staging"] and options["replace"]:
            raise CommandError("choose --into-staging or --replace")
        backup = Backup.dangerously_all_tenants.filter(pk=options["backup"]).first()
        if backup is None:
            raise CommandError(f"no backup {options['backup']}")
        bar = None

        def progress(done, total):
            nonlocal bar
            bar = bar or ProgressBar(total, label="tables restored", stream=self.stderr)
            bar.advance(done - bar.done)

        try:
            report = backups.restore_into_staging(backup, actor="staff:cli", progress=progress)
            if bar:
                bar.finish()
            self.stdout.write(f"restored into staging {report['staging_schema']}"
                              f"{' and database ' + report['staging_database'] if report['staging_database'] else ''}: "
                              f"{len(report['checks'])} tables verified")
            if options["replace"]:
                report = backups.replace_live(backup, actor="staff:cli")
                self.stdout.write(f"live data replaced; what it replaced is backup {report['pre_restore_backup']}")
        except APIError as exc:
            raise CommandError(f"{exc.code}: {exc.message}") from None
