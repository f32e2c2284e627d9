from django.core.management.base import BaseCommand, CommandError

from compliance.audit import verify_chain
from tenants.models import Tenant
from tenants.progress import ProgressBar


class Command(BaseCommand):
    help = "Verify the audit hash chain of one tenant (--tenant id|slug) or of all; names the first broken link."

    def add_arguments(self, parser):
        parser.add_argument("--tenant")

    def handle(self, *args, **options):
        ref = options["tenant"]
        if ref:
            tenants = [Tenant.objects.filter(pk=int(ref)).first() if ref.isdigit() else Tenant.objects.filter(slug=ref).first()]
            if tenants[0] is None:
                raise CommandError(f"no tenant {ref!r}")
        else:
            tenants = list(Tenant.objects.order_by("id"))
        bar = ProgressBar(len(tenants), label="tenants", stream=self.stderr) if len(tenants) > 1 else None
        broken = []
        for tenant in tenants:
            intact, seq = verify_chain(tenant.id)
            if not intact:
                broken.append(f"{tenant.slug}: chain broken at seq {seq}")
            if bar:
                bar.advance()
        if bar:
            bar.finish()
        for line in broken:
            self.stdout.write(line)
        if broken:
            raise CommandError(f"{len(broken)} of {len(tenants)} audit chains are broken")
        self.stdout.write(f"{len(tenants)} audit chains intact.")
