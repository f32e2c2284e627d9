from celery import shared_task

from policy import quotas


@shared_task(name="policy.tasks.flush_usage")
def flush_usage() -> int:
    return quotas.flush()
