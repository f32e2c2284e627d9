from tenants import services
from tenants.management.commands._base import TenantCommand


class Command(TenantCommand):
    help = "Revoke every key of a tenant and print a new owner key (shown once)."

    def handle(self, *args, **options):
        key, plaintext = services.keys_rotate(tenant=self.get_tenant(options["tenant"]), actor="staff:cli")
        self.stdout.write(f"All earlier keys revoked. New owner key (shown once):\n{plaintext}")
