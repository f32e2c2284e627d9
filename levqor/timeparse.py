from datetime import datetime, timezone as dt_timezone

from django.utils import timezone
from django.utils.dateparse import parse_datetime


def parse_when(value) -> datetime | None:
    """An ISO 8601 date-time from client input, made aware (UTC when no offset is given);
    None for anything else, including well-formed but impossible values (minute 61)."""
    if not isinstance(value, str) or len(value) > 64:
        return None
    try:
        when = parse_datetime(value.strip())
    except ValueError:
        return None
    if when is not None and timezone.is_naive(when):
        when = timezone.make_aware(when, dt_timezone.utc)
    return when
