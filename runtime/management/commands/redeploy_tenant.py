from tenants.management.commands._base import TenantCommand


class Command(TenantCommand):
    help = "Re-apply a tenant's runtime configuration (limits, domain, caches, connections); records last_deploy_at."

    def handle(self, *args, **options):
        from runtime.deploy import tenant_redeploy

        tenant = self.get_tenant(options["tenant"])
        runtime = tenant_redeploy(tenant=tenant, actor="staff:cli")
        self.stdout.write(f"redeployed {tenant.slug} at {runtime.last_deploy_at:%Y-%m-%d %H:%M:%S} UTC")
