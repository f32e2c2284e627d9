"""Fixed-window rate limits in Redis, e.g. LEVQOR_SIGNUP_RATE="10/hour"."""
from __future__ import annotations

import logging
import time

import redis

from levqor.redis import client

logger = logging.getLogger(__name__)
_PERIODS = {"second": 1, "sec": 1, "s": 1, "minute": 60, "min": 60, "m": 60, "hour": 3600, "h": 3600, "day": 86400, "d": 86400}


def parse_rate(rate: str) -> tuple[int, int]:
    count, _, period = rate.partition("/")
    try:
        return int(count), _PERIODS[period.strip().lower()]
    except (ValueError, KeyError):
        raise ValueError(f"rate {rate!r} must look like '10/hour'") from None


def hit(bucket: str, rate: str) -> tuple[bool, int]:
    """Count one hit; (allowed, seconds until the window resets)."""
    limit, period = parse_rate(rate)
    now = int(time.time())
    window = now // period
    key = f"levqor:rl:{bucket}:{window}"
    try:
        pipe = client().pipeline()
        pipe.incr(key)
        pipe.expire(key, period + 1)
        count, _ = pipe.execute()
    except redis.RedisError:
        # Redis down: keep signups open rather than refuse everyone; it is logged.
        logger.warning("rate limit %s not enforced: Redis unavailable", bucket)
        return True, 0
    return count <= limit, period - (now % period)
