from tenants import migration_plan
from tenants.management.commands._tenancy_step import TenancyStepCommand


class Command(TenancyStepCommand):
    help = "Roll back to the single-tenant layout: copy levqor-main's data back to the legacy schema and switch writes there."
    step = staticmethod(migration_plan.rollback)
