"""Fault points for rollback tests and chaos drills.

`fault_point("provision.after:schema")` raises `InjectedFault` when that name is in
settings.LEVQOR_FAULTS (env `LEVQOR_FAULTS`, a comma list). Empty in normal running.
"""
from django.conf import settings


class InjectedFault(RuntimeError):
    pass


def fault_point(name: str) -> None:
    faults = getattr(settings, "LEVQOR_FAULTS", ())
    if faults and name in faults:
        raise InjectedFault(f"injected fault at {name}")
