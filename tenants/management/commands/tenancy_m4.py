from tenants import migration_plan
from tenants.management.commands._tenancy_step import TenancyStepCommand


class Command(TenancyStepCommand):
    help = "M4: open self-service signups and close the legacy single-tenant path."
    step = staticmethod(migration_plan.m4_open)
