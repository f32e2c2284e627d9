from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from levqor.errors import APIError
from tenants import services


class Command(BaseCommand):
    help = "Provision a tenant (the same service as POST /api/tenants); prints its owner API key once."

    def add_arguments(self, parser):
        parser.add_argument("slug")
        parser.add_argument("--name", required=True)
        parser.add_argument("--plan", default="core")
        parser.add_argument("--region", default=None)
        parser.add_argument("--admin-email", default="")

    def handle(self, *args, **o):
        try:
            result = services.tenant_create(name=o["name"], slug=o["slug"], plan=o["plan"], region=o["region"],
                                            admin_email=o["admin_email"], actor="staff:cli")
        except APIError as exc:
            raise CommandError(f"{exc.code}: {exc.message} {exc.details or ''}") from None
        t = result.tenant
        self.stdout.write(f"Tenant {t.slug} (id {t.id}) {t.status}: plan {t.plan}, region {t.region}, "
                          f"isolation {t.isolation}, provisioned in {t.provision_ms} ms")
        self.stdout.write(f"URL: https://{t.slug}.{settings.LEVQOR_BASE_DOMAIN}/")
        self.stdout.write(f"Owner API key (shown once): {result.api_key}")
