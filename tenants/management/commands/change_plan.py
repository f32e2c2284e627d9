from tenants import services
from tenants.management.commands._base import TenantCommand


class Command(TenantCommand):
    help = "Change a tenant's plan (staff); new limits apply to its next request."

    def add_arguments(self, parser):
        super().add_arguments(parser)
        parser.add_argument("plan")

    def handle(self, *args, **options):
        tenant = services.tenant_change_plan(tenant=self.get_tenant(options["tenant"]), plan=options["plan"],
                                             actor="staff:cli")
        self.stdout.write(f"{tenant.slug}: plan {tenant.plan}")
