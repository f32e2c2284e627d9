from django.apps import AppConfig


class RuntimeConfig(AppConfig):
    name = "runtime"
    verbose_name = "Runtime"

    def ready(self):
        # Signal receivers (metrics flush after requests, alert delivery, slow provisioning)
        # and Celery tasks in a module Celery's autodiscovery (tasks.py only) does not find.
        from runtime import alerting, metrics, metrics_tasks  # noqa: F401
        from django.db.models.signals import post_save

        # Jobs (workflow runs) finishing, for the rollups' job success (runtime/anomaly.py).
        post_save.connect(metrics.record_job_finished, sender="workflows.WorkflowRun",
                          dispatch_uid="runtime.metrics.record_job_finished")

        # Circuit breakers guard compliance's outbound calls through a hook (compliance sits
        # below the runtime), and each dependency's probe is registered here.
        from runtime import breaker_probes, capacity

        breaker_probes.register()
        capacity.register()  # the plans' autoscale caps on tenant tasks (tenants/tasks_base.py)

        # The Integrity Pack's backup check (compliance sits below the runtime).
        from compliance import integrity
        from runtime import backups

        integrity.register_check("backups", backups.integrity_check)
