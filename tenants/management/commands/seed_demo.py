import secrets

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand

from tenants import services
from tenants.models import PlatformKey, Tenant

DEMO_TENANTS = [("demo-core", "Demo Core Co", "core"), ("demo-enterprise", "Demo Enterprise Ltd", "enterprise")]


class Command(BaseCommand):
    help = "Seed a demo platform: a staff user, a platform key and two tenants on two plans (idempotent)."

    def add_arguments(self, parser):
        parser.add_argument("--base-url", default="http://localhost:8000")

    def handle(self, *args, **options):
        base = options["base_url"].rstrip("/")
        User = get_user_model()
        password = secrets.token_urlsafe(12)
        staff, created = User.objects.get_or_create(username="staff", defaults={"email": "staff@levqor.local",
                                                                                 "is_staff": True, "is_superuser": True})
        staff.set_password(password)
        staff.save()
        PlatformKey.objects.filter(name="demo-staff").delete()
        _, platform_key = services.platform_key_create(name="demo-staff")
        lines = [f"Staff admin: {base}/admin/  user: staff  password: {password}",
                 f"Platform staff key: {platform_key}"]
        for slug, name, plan in DEMO_TENANTS:
            tenant = Tenant.objects.filter(slug=slug).first()
            if tenant is None:
                result = services.tenant_create(name=name, slug=slug, plan=plan, admin_email=f"owner@{slug}.example",
                                                actor="system:seed")
                tenant, key = result.tenant, result.api_key
            else:
                _, key = services.keys_rotate(tenant=tenant, actor="system:seed")
            lines.append(
                f"Tenant {slug} ({plan}, {tenant.isolation} isolation): owner key {key}\n"
                f"    curl -H 'Authorization: Bearer {key}' -H 'X-Tenant-ID: {slug}' {base}/api/workflows\n"
                f"    host: {slug}.{settings.LEVQOR_BASE_DOMAIN}"
            )
        self.stdout.write("\n".join(lines))
