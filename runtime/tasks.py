"""Celery tasks of the runtime app, grouped by feature (add yours under its own heading)."""
from celery import shared_task

# --- DR: region health checks and automatic failover (runtime/dr.py) ---------------------


@shared_task(name="runtime.tasks.check_region_health")
def check_region_health() -> dict[str, str]:
    """Every 10 s (beat): probe each region's primary; fails a region over at its
    LEVQOR_FAILOVER_AFTER_FAILURES-th consecutive failure."""
    from runtime import dr

    return dr.check_region_health()


# --- circuit breakers (runtime/breakers.py) --------------------------------------------------


@shared_task(name="runtime.tasks.flush_breaker_journal")
def flush_breaker_journal() -> int:
    """Every 30 s: write breaker transitions a rolled-back transaction left in the journal."""
    from runtime import breakers

    return breakers.flush_journal()


# --- cost controls: held tenant tasks, storage lifecycle (runtime/capacity.py, lifecycle.py) -


@shared_task(name="runtime.tasks.release_held_tasks")
def release_held_tasks() -> int:
    """Every 10 s: send the tasks tenants queued past their share, as their share frees up."""
    from runtime import capacity

    return capacity.release_all()


@shared_task(name="runtime.tasks.storage_lifecycle")
def storage_lifecycle() -> dict:
    """Nightly: delete backup and evidence files past their plan's retention."""
    from runtime import lifecycle

    return lifecycle.expire_files()


# --- backup freshness alert (runtime/lifecycle.py) -------------------------------------------


@shared_task(name="runtime.tasks.check_stale_backups")
def check_stale_backups() -> list[int]:
    """Hourly: alert for active tenants without a fresh OK backup."""
    from runtime import lifecycle

    return lifecycle.check_stale_backups()
