from tenants import migration_plan
from tenants.management.commands._tenancy_step import TenancyStepCommand


class Command(TenancyStepCommand):
    help = "M1: verify and apply the shared migrations, set up the legacy schema and register the organization levqor-main (no behaviour change)."
    step = staticmethod(migration_plan.m1_prepare)
