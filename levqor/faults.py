"""Fault points for rollback tests and chaos drills.

`fault_point("provision.after:schema")` raises `InjectedFault` when that name is in
settings.LEVQOR_FAULTS (env `LEVQOR_FAULTS`, a comma list). Empty in normal running.
"""
from django.conf import settings


class InjectedFault(RuntimeError):
    pass


def fault_point(name: str) -> None:
    """Raise at `name` when "name" is listed; die on the spot (no cleanup, like a killed
    worker) when "crash:name" is."""
    faults = getattr(settings, "LEVQOR_FAULTS", ())
    if not faults:
        return
    if f"crash:{name}" in faults:
        import os

        os._exit(137)
    if name in faults:
        raise InjectedFault(f"injected fault at {name}")
