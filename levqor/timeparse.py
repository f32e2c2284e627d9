from datetime import datetime, timezone as dt_timezone

from django.utils import timezone
from django.utils.dateparse import parse_datetime


def parse_when(value) -> datetime | None:
    """An ISO 8601 date-time from client input, in UTC (UTC assumed when no offset is
    given); None for anything else, including well-formed but impossible values (minute
    61) and those PostgreSQL cannot store (an offset beyond ±15:59 is valid in Python)."""
    if not isinstance(value, str) or len(value) > 64:
        return None
    try:
        when = parse_datetime(value.strip())
    except ValueError:
        return None
    if when is None:
        return None
    if timezone.is_naive(when):
        return timezone.make_aware(when, dt_timezone.utc)
    try:
        return when.astimezone(dt_timezone.utc)
    except OverflowError:  # out of datetime's range once shifted
        return None
