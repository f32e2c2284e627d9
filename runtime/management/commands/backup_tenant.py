from tenants.management.commands._base import TenantCommand
from tenants.progress import ProgressBar


class Command(TenantCommand):
    help = "Back up one tenant now (its schema or database, and its rows of the shared tables)."

    def handle(self, *args, **options):
        from runtime import backups

        tenant = self.get_tenant(options["tenant"])
        bar = None

        def progress(done, total):
            nonlocal bar
            bar = bar or ProgressBar(total, label="tables", stream=self.stderr)
            bar.advance(done - bar.done)

        backup = backups.backup_tenant(tenant=tenant, trigger="manual", actor="staff:cli", progress=progress)
        if bar:
            bar.finish()
        rows = sum(t["rows"] for t in backup.manifest_json["tables"])
        self.stdout.write(f"backup {backup.pk} of {tenant.slug}: {len(backup.manifest_json['tables'])} tables, {rows} rows, "
                          f"{backup.size_bytes} bytes, sha256 {backup.checksum_sha256}, in {backup.duration_ms} ms, "
                          f"stored as {backup.storage_name} in region {backup.region}")
