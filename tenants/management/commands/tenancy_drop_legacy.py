from tenants import migration_plan
from tenants.management.commands._tenancy_step import TenancyStepCommand


class Command(TenancyStepCommand):
    help = "Drop the legacy schema; refused before M4 + 14 days."
    step = staticmethod(migration_plan.drop_legacy)
