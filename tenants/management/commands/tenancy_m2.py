from tenants import migration_plan
from tenants.management.commands._tenancy_step import TenancyStepCommand


class Command(TenancyStepCommand):
    help = "M2: create levqor-main's tenant schema and copy the single-tenant data into it, verified by counts and checksums."
    step = staticmethod(migration_plan.m2_copy)
