from django.core.management.base import BaseCommand

from tenants.progress import ProgressBar


class Command(BaseCommand):
    help = "Run each tenant's health checks (storage, backup, migrations, keys) and list those not ok."

    def add_arguments(self, parser):
        parser.add_argument("--all", action="store_true", help="list healthy tenants too")

    def handle(self, *args, **options):
        from runtime.health import tenant_health
        from tenants.models import Tenant

        tenants = list(Tenant.objects.filter(status=Tenant.Status.ACTIVE).order_by("id"))
        bar = ProgressBar(len(tenants), label="tenants checked", stream=self.stderr)
        rows = []
        for tenant in tenants:
            rows.append((tenant, tenant_health(tenant)))
            bar.advance()
        bar.finish()
        for tenant, health in rows:
            if options["all"] or health["status"] != "ok":
                problems = "; ".join(f"{name}: {c['detail']}" for name, c in health["checks"].items() if c["state"] != "ok")
                self.stdout.write(f"{health['status']:8} {tenant.slug:30} {problems}")
        counts = {state: sum(1 for _, h in rows if h["status"] == state) for state in ("ok", "warning", "failing")}
        self.stdout.write(f"{len(rows)} tenants: {counts['ok']} ok, {counts['warning']} warning, {counts['failing']} failing")
