import os

from celery import Celery

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "levqor.settings")

app = Celery("levqor")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()
# Task modules not named tasks.py: a worker that never imports them drops their messages
# as "unregistered task" (found by the worker-kill drill: every backup was discarded).
app.autodiscover_tasks(related_name="backup_tasks")
app.autodiscover_tasks(related_name="metrics_tasks")
