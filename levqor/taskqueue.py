"""Handing work to Celery after a commit, when the user is waiting for the answer.

A row that promises work ("backup running", "report pending") is committed first, so the
task can never run before it exists; the task is sent after the commit. If the broker
(Redis) is down at that moment, the row would promise work that no worker will ever do.
`send_after_commit` undoes the row instead and answers 503 `queue_unavailable`: the user
retries later and nothing is left half-done.

Work nobody waits for (stream wake-ups, alert deliveries) does not use this: a sweep task
finds what was missed.
"""
from __future__ import annotations

import logging
from typing import Callable

from django.db import transaction
from kombu.exceptions import OperationalError

from levqor.errors import APIError

logger = logging.getLogger(__name__)


class QueueUnavailable(APIError):
    def __init__(self):
        super().__init__("queue_unavailable", "The task queue is unavailable; nothing was started. Try again shortly.",
                         status_code=503)


def send_after_commit(send: Callable[[], object], *, undo: Callable[[], None]) -> None:
    """After the current transaction commits, call `send()`; if the broker cannot take the
    message, call `undo()` and raise QueueUnavailable (out of the atomic block's exit)."""

    def _send() -> None:
        try:
            send()
        except OperationalError as exc:
            logger.warning("the broker refused a task: %s", exc)
            undo()
            raise QueueUnavailable() from exc

    transaction.on_commit(_send)
