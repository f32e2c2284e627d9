from tenants import migration_plan
from tenants.management.commands._tenancy_step import TenancyStepCommand


class Command(TenancyStepCommand):
    help = "M3: final copy under lock, verify read paths, backfill the audit trail, switch writes to the tenant schema."
    step = staticmethod(migration_plan.m3_switch)
