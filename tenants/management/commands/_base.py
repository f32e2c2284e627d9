from django.core.management.base import BaseCommand, CommandError

from levqor.errors import APIError
from tenants.models import Tenant


class TenantCommand(BaseCommand):
    """A staff command acting on one tenant, named by id or slug."""

    def add_arguments(self, parser):
        parser.add_argument("tenant", help="tenant id or slug")

    def get_tenant(self, ref: str) -> Tenant:
        tenant = Tenant.objects.filter(pk=int(ref)).first() if ref.isdigit() else Tenant.objects.filter(slug=ref).first()
        if tenant is None:
            raise CommandError(f"no tenant {ref!r}")
        return tenant

    def execute(self, *args, **options):
        try:
            return super().execute(*args, **options)
        except APIError as exc:
            raise CommandError(f"{exc.code}: {exc.message}") from None
