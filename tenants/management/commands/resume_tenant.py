from tenants import services
from tenants.management.commands._base import TenantCommand


class Command(TenantCommand):
    help = "Resume a tenant (staff)."

    def handle(self, *args, **options):
        tenant = services.tenant_resume(tenant=self.get_tenant(options["tenant"]), actor="staff:cli")
        self.stdout.write(f"{tenant.slug}: {tenant.status}")
