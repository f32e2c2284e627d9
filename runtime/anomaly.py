"""Per-tenant anomaly detection: each tenant against its own history, never a fleet threshold.

Every minute (`runtime.metrics_tasks.detect_anomalies`) the detector closes the last whole
minute (the one that ended at least GRACE_SECONDS ago, so the web processes' batched
flushes are in) and judges five figures of each tenant from the metric rollups
(runtime/metrics.py):

| metric | from a minute row | judged | needs |
|---|---|---|---|
| `p95_ms` | p95 of the latency histogram | too high | >= 10 requests in the minute |
| `error_rate` | 5xx / requests | too high | >= 20 requests |
| `queue_depth` | tasks waiting (broker + held by the caps) when the minute was closed | too high | - |
| `job_success` | succeeded / finished workflow runs | too low | >= 5 finished runs |
| `api_calls` | API calls in the minute | too high or too low | - |

The band. Values are compared on a scale where their noise is about even (log2 for
latency, square root for counts, as is for rates). The reference is the tenant's own
previous RECENT_MINUTES minutes (before the minutes being judged, leaving out minutes of
earlier anomalies of the same metric):

- **recent baseline** (before there is enough history, and always one half of the
  band): median ± K x 1.4826 x MAD of those minutes;
- **seasonal baseline**, once the same hour of the week had data in at least
  SEASONAL_MIN_WEEKS of the previous SEASONAL_WEEKS weeks (so after two weeks of history,
  for hours the tenant is usually active): the expected value of an hour is the median of
  that hour of the week in those weeks (from the hourly rollups), shifted by the median of
  the last hour's residuals from their hours' expected values (this week runs a little
  hotter or cooler), ± K x 1.4826 x MAD of those residuals. The band is then the union of
  this and the recent band: unusual both for this hour of the week and for the last hour.
  Sharp daily and weekly patterns (a batch job at 02:00, Monday mornings) are expected.

The half-width never goes under a per-metric floor (a factor of 2 for latency, the
Poisson noise for counts, the binomial noise of the minute's volume at the reference's
pooled rate for rates), so a tenant whose figures never move is not paged for one
bucket's difference.

An episode opens when the last minute is out of the band and the CONFIRM_MINUTES - 1
before it are at least CONFIRM_REACH of the way out (rates: fully out too), on the same
side: a step is found at most CONFIRM_MINUTES + 1 minutes (and GRACE_SECONDS) after its
first minute, a ramp soon after it crosses half the band. It resolves when
RESOLVE_MINUTES minutes in a row are back inside the band it opened with (the baseline
does not learn an ongoing anomaly). There is one open episode per tenant and metric, and
one alert per episode (`metrics.anomaly`, tenant audience, resolved with the episode).

The judging is pure (`Detector` over `Figures`), so the benchmark (bench/anomaly.py)
replays synthetic weeks through the very same code as the database path (`run`).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone as dt_timezone

from runtime.metrics import BUCKETS, HOUR, MINUTE, percentile_ms

RECENT_MINUTES = 60  # the reference window
CONFIRM_MINUTES = 2  # minutes in a row out of the band to open an episode...
CONFIRM_REACH = 0.5  # ...the latest fully, the earlier ones at least this share of the half-width out
RESOLVE_MINUTES = 3  # minutes in a row back in the band to resolve it
SEASONAL_WEEKS = 4  # previous weeks the seasonal baseline looks at
SEASONAL_MIN_WEEKS = 2  # "enough history": the hour of the week had data in this many of them
MIN_REFERENCE_MINUTES = 20  # fewer usable reference minutes: no verdict
K = 5.0  # half-width of the band, in robust standard deviations (1.4826 x MAD)
MAD_SIGMA = 1.4826
GRACE_SECONDS = 10  # a minute is closed this long after it ended (web processes flush every 5 s)
WEEK = 7 * 24 * HOUR
WEEKDAYS = ("Mondays", "Tuesdays", "Wednesdays", "Thursdays", "Fridays", "Saturdays", "Sundays")

P95, ERROR_RATE, QUEUE_DEPTH, JOB_SUCCESS, API_CALLS = "p95_ms", "error_rate", "queue_depth", "job_success", "api_calls"
MIN_LATENCY_REQUESTS = 10
MIN_RATE_REQUESTS = 20
MIN_FINISHED_JOBS = 5


@dataclass(frozen=True)
class Spec:
    """How one metric is judged: its scale, which side is bad, the band's floor."""

    label: str
    scale: str  # log2, sqrt, linear
    high: bool  # too high is an anomaly
    low: bool  # too low is an anomaly
    floor: float  # least half-width, on the scale
    binomial: bool = False  # a rate: the floor also covers the minute's sampling noise

    def to_scale(self, x: float) -> float:
        if self.scale == "log2":
            return math.log2(max(x, 0.5))
        if self.scale == "sqrt":
            return math.sqrt(max(x, 0.0))
        return x

    def from_scale(self, y: float) -> float:
        if self.scale == "log2":
            return 2.0 ** y
        if self.scale == "sqrt":
            return max(y, 0.0) ** 2
        return y


SPECS = {
    P95: Spec("p95 latency", "log2", high=True, low=False, floor=1.0),  # at least x2
    ERROR_RATE: Spec("server error rate", "linear", high=True, low=False, floor=0.02, binomial=True),
    QUEUE_DEPTH: Spec("queued tasks", "sqrt", high=True, low=False, floor=4.0),  # from 0: at least 16 tasks
    JOB_SUCCESS: Spec("job success rate", "linear", high=False, low=True, floor=0.05, binomial=True),
    API_CALLS: Spec("API calls per minute", "sqrt", high=True, low=True, floor=2.5),  # 5 x Poisson's 0.5
}
METRICS = tuple(SPECS)


class Figures:
    """One tenant's rollup figures for one minute (`seconds` = 60) or one hour (3600), and
    the value of each metric they give (None: too little traffic to say)."""

    __slots__ = ("seconds", "requests", "api_calls", "errors", "buckets", "max_ms", "jobs_succeeded", "jobs_failed",
                 "queue_depth", "_values")

    def __init__(self, *, seconds: int = MINUTE, requests: int = 0, api_calls: int = 0, errors: int = 0,
                 buckets=None, max_ms: float = 0.0, jobs_succeeded: int = 0, jobs_failed: int = 0,
                 queue_depth: int = 0):
        self.seconds, self.requests, self.api_calls, self.errors = seconds, requests, api_calls, errors
        self.buckets, self.max_ms = buckets, max_ms
        self.jobs_succeeded, self.jobs_failed, self.queue_depth = jobs_succeeded, jobs_failed, queue_depth
        self._values = None

    @classmethod
    def of_row(cls, row) -> Figures:
        return cls(seconds=row.seconds, requests=row.requests, api_calls=row.api_calls, errors=row.errors,
                   buckets=row.latency_buckets, max_ms=row.latency_max_ms, jobs_succeeded=row.jobs_succeeded,
                   jobs_failed=row.jobs_failed, queue_depth=row.queue_depth)

    def add(self, other: Figures) -> None:
        """Fold another row of the same period in (an hour's late minute rows)."""
        self.requests += other.requests
        self.api_calls += other.api_calls
        self.errors += other.errors
        if other.buckets is not None:
            self.buckets = list(other.buckets) if self.buckets is None else [
                a + b for a, b in zip(self.buckets, other.buckets)]
        self.max_ms = max(self.max_ms, other.max_ms)
        self.jobs_succeeded += other.jobs_succeeded
        self.jobs_failed += other.jobs_failed
        self.queue_depth = max(self.queue_depth, other.queue_depth)  # an hour keeps its peak
        self._values = None

    def volume(self, metric: str) -> int:
        """The number of events behind a rate (binomial floor)."""
        return self.jobs_succeeded + self.jobs_failed if metric == JOB_SUCCESS else self.requests

    def hits(self, metric: str) -> int:
        """The events a rate counts: server errors, or succeeded runs."""
        return self.jobs_succeeded if metric == JOB_SUCCESS else self.errors

    def values(self) -> dict[str, float | None]:
        if self._values is None:
            per_minute = MINUTE / self.seconds  # an hour's counts are given per minute
            finished = self.jobs_succeeded + self.jobs_failed
            p95 = None
            if self.requests >= MIN_LATENCY_REQUESTS and self.buckets is not None:
                p95 = percentile_ms(self.buckets, self.max_ms)
            self._values = {
                P95: p95,
                ERROR_RATE: self.errors / self.requests if self.requests >= MIN_RATE_REQUESTS else None,
                QUEUE_DEPTH: self.queue_depth,  # an hour's is its peak minute
                JOB_SUCCESS: self.jobs_succeeded / finished if finished >= MIN_FINISHED_JOBS else None,
                API_CALLS: self.api_calls * per_minute,
            }
        return self._values


EMPTY = Figures()


@dataclass
class Band:
    metric: str
    low: float  # on the metric's own scale (ms, tasks, a fraction)
    high: float
    baseline: str  # seasonal, recent
    center: float  # on the judging scale
    half: float
    spread: float  # the robust standard deviation behind `half`
    pooled: float | None = None  # a rate's events / volume over the reference minutes

    def half_for(self, volume: int) -> float:
        """The half-width for a minute of `volume` events: a rate's band is never narrower
        than K times its binomial standard deviation at the reference minutes' pooled rate
        (taken between 1 % and 99 %)."""
        spec = SPECS[self.metric]
        if not (spec.binomial and volume):
            return self.half
        p = min(max(self.pooled if self.pooled is not None else spec.from_scale(self.center), 0.01), 0.99)
        return max(self.half, K * math.sqrt(p * (1 - p) / volume))

    def at_volume(self, volume: int) -> Band:
        """This band as it applied to a minute of `volume` events (what is stored and shown)."""
        spec = SPECS[self.metric]
        half = self.half_for(volume)
        low, high = spec.from_scale(self.center - half), spec.from_scale(self.center + half)
        if spec.scale == "linear":
            low, high = max(low, 0.0), min(high, 1.0)
        return Band(self.metric, low, high, self.baseline, self.center, half, self.spread, self.pooled)

    def side(self, value: float | None, volume: int = 0, *, reach: float = 1.0) -> str | None:
        """'high' or 'low' when `value` is out of the band on a side that matters (or, with
        `reach` < 1, beyond that share of the half-width), else None."""
        if value is None:
            return None
        spec = SPECS[self.metric]
        half = self.half_for(volume) * reach
        y = spec.to_scale(value)
        if spec.high and y > self.center + half:
            return "high"
        if spec.low and y < self.center - half:
            return "low"
        return None


@dataclass
class Episode:
    """An open anomaly, as the detector needs it (an Anomaly row, or the benchmark's record)."""

    metric: str
    direction: str
    low: float
    high: float
    started_at: int
    worst: float
    ref: object = None  # the caller's handle (the Anomaly)


@dataclass
class Opened:
    metric: str
    direction: str
    band: Band
    observed: float
    started_at: int  # epoch seconds of the first minute out of the band
    explanation: str


@dataclass
class Resolved:
    episode: Episode
    at: int  # the first minute back in the band


@dataclass
class Worsened:
    episode: Episode
    worst: float


def _median(values: list[float]) -> float:
    s = sorted(values)
    n = len(s)
    mid = n // 2
    return s[mid] if n % 2 else (s[mid - 1] + s[mid]) / 2


def epoch(t: datetime) -> int:
    return int(t.timestamp())


def aware(ts: int) -> datetime:
    return datetime.fromtimestamp(ts, tz=dt_timezone.utc)


def hour_of(ts: int) -> int:
    return ts - ts % HOUR


def closed_minute(now: datetime) -> datetime:
    """The start of the last whole minute that ended at least GRACE_SECONDS ago."""
    return (now - timedelta(seconds=GRACE_SECONDS)).replace(second=0, microsecond=0) - timedelta(minutes=1)


def format_value(metric: str, x: float) -> str:
    if metric == P95:
        return f"{x:.0f} ms"
    if metric in (ERROR_RATE, JOB_SUCCESS):
        return f"{x * 100:.1f} %"
    return f"{x:.0f}"


def explain(metric: str, observed: float, band: Band, t: int) -> str:
    """'p95 latency 840 ms, usually 40–95 ms at Tuesdays 14:00 UTC'."""
    label = SPECS[metric].label
    if metric == P95:
        usual = f"{band.low:.0f}–{band.high:.0f} ms"
    elif metric in (ERROR_RATE, JOB_SUCCESS):
        usual = f"{band.low * 100:.1f}–{band.high * 100:.1f} %"
    else:
        usual = f"{band.low:.0f}–{band.high:.0f}"
    when = aware(t)
    when = f"at {WEEKDAYS[when.weekday()]} {when:%H}:00 UTC" if band.baseline == "seasonal" else "over the last hour"
    return f"{label} {format_value(metric, observed)}, usually {usual} {when}"


@dataclass
class Detector:
    """One tenant's figures and the judging of them. Times are epoch seconds (UTC) of the
    start of a minute or an hour.

    `minutes`: minute -> Figures for the recent minutes (missing: no traffic).
    `hours`: hour -> Figures of past hours, the seasonal reference (missing: no traffic).
    `history_since`: since when the tenant's figures exist (its creation): a week before it
    is no history, even though it has no rows.
    `excluded`: metric -> [(start, end or None)] of earlier episodes, left out of references.
    """

    minutes: dict = field(default_factory=dict)
    hours: dict = field(default_factory=dict)
    history_since: int | None = None
    excluded: dict = field(default_factory=dict)
    _seasonal: dict = field(default_factory=dict)  # (metric, hour) -> center on the scale, or None

    def figures(self, minute: int) -> Figures:
        return self.minutes.get(minute, EMPTY)

    def value(self, metric: str, minute: int) -> float | None:
        return self.minutes.get(minute, EMPTY).values()[metric]

    def seasonal_center(self, metric: str, hour: int) -> float | None:
        """Median, over the previous weeks with data, of this hour of the week; None
        before SEASONAL_MIN_WEEKS of them."""
        key = (metric, hour)
        if key in self._seasonal:
            return self._seasonal[key]
        spec = SPECS[metric]
        samples = []
        for k in range(1, SEASONAL_WEEKS + 1):
            past = hour - k * WEEK
            if self.history_since is not None and past < self.history_since:
                break
            figures = self.hours.get(past)
            if figures is None:
                if metric in (API_CALLS, QUEUE_DEPTH) and self.history_since is not None:
                    samples.append(spec.to_scale(0.0))  # known to exist then, and quiet
                continue
            value = figures.values()[metric]
            if value is not None:
                samples.append(spec.to_scale(value))
        center = _median(samples) if len(samples) >= SEASONAL_MIN_WEEKS else None
        self._seasonal[key] = center
        return center

    def _reference(self, metric: str, t: int, base_t: float | None) -> tuple[float, float, float] | None:
        """(center, half-width, robust sd) on the metric's scale from the RECENT_MINUTES
        before the judged ones: of their values, or with `base_t` of their residuals from
        their hours' seasonal centers (then centered on `base_t`)."""
        spec = SPECS[metric]
        excluded = self.excluded.get(metric, ())
        minutes = self.minutes
        residuals = []
        for minute in range(t - (CONFIRM_MINUTES + RECENT_MINUTES - 1) * MINUTE, t - CONFIRM_MINUTES * MINUTE + 1,
                            MINUTE):
            x = minutes.get(minute, EMPTY).values()[metric]
            if x is None:
                continue
            if excluded and any(start <= minute and (end is None or minute < end) for start, end in excluded):
                continue
            base = 0.0
            if base_t is not None:
                base = self.seasonal_center(metric, hour_of(minute))
                if base is None:
                    continue
            residuals.append(spec.to_scale(x) - base)
        if len(residuals) < MIN_REFERENCE_MINUTES:
            return None
        shift = _median(residuals)
        spread = MAD_SIGMA * _median([abs(r - shift) for r in residuals])
        return (base_t or 0.0) + shift, max(K * spread, spec.floor), spread

    def pooled(self, metric: str, t: int) -> float | None:
        """A rate over all the reference minutes together (errors / requests, succeeded /
        finished): what one minute's count is drawn from, for the binomial floor."""
        if not SPECS[metric].binomial:
            return None
        hits = volume = 0
        for minute in range(t - (CONFIRM_MINUTES + RECENT_MINUTES - 1) * MINUTE, t - CONFIRM_MINUTES * MINUTE + 1,
                            MINUTE):
            figures = self.minutes.get(minute)
            if figures is not None and figures.values()[metric] is not None:
                hits += figures.hits(metric)
                volume += figures.volume(metric)
        return hits / volume if volume else None

    def band(self, metric: str, t: int) -> Band | None:
        """The band for minute `t`. With enough history, the union of the seasonal band and
        the recent one: an anomaly is unusual both for this hour of the week and for the
        last hour (a within-hour batch the hourly history cannot show stays quiet)."""
        recent = self._reference(metric, t, None)
        if recent is None:
            return None
        low, high, spread = recent[0] - recent[1], recent[0] + recent[1], recent[2]
        baseline = "recent"
        base_t = self.seasonal_center(metric, hour_of(t))
        if base_t is not None:
            seasonal = self._reference(metric, t, base_t)
            if seasonal is not None:
                low, high = min(low, seasonal[0] - seasonal[1]), max(high, seasonal[0] + seasonal[1])
                spread, baseline = max(spread, seasonal[2]), "seasonal"
        return Band(metric, 0.0, 0.0, baseline, (low + high) / 2, (high - low) / 2, spread,
                    self.pooled(metric, t)).at_volume(0)

    def judge(self, metric: str, t: int, episode: Episode | None = None):
        """What minute `t` changes for this metric: Opened, Resolved, Worsened or None."""
        if episode is not None:
            return self._follow(episode, t)
        judged = []
        for i in range(CONFIRM_MINUTES):
            minute = t - i * MINUTE
            figures = self.minutes.get(minute, EMPTY)
            x = figures.values()[metric]
            if x is None:
                return None
            judged.append((x, figures.volume(metric)))
        band = self.band(metric, t)
        if band is None:
            return None
        # The latest minute out of the band, the ones before it at least half-way out on the
        # same side: a step shows in 2 minutes, and so does a ramp (a queue filling up). Rates
        # need every minute fully out: a few events make their small-count tails heavy.
        reach = 1.0 if SPECS[metric].binomial else CONFIRM_REACH
        sides = {band.side(x, volume, reach=1.0 if i == 0 else reach) for i, (x, volume) in enumerate(judged)}
        if len(sides) != 1 or None in sides:
            return None
        observed, volume = judged[0]
        band = band.at_volume(volume)
        return Opened(metric, sides.pop(), band, observed, t - (CONFIRM_MINUTES - 1) * MINUTE,
                      explain(metric, observed, band, t))

    def _follow(self, episode: Episode, t: int):
        """An open episode: resolved after RESOLVE_MINUTES back in its band; else its worst."""
        back = 0
        for i in range(RESOLVE_MINUTES):
            x = self.value(episode.metric, t - i * MINUTE)
            if x is None or (x <= episode.high if episode.direction == "high" else x >= episode.low):
                back += 1
        if back == RESOLVE_MINUTES:
            return Resolved(episode, t - (RESOLVE_MINUTES - 1) * MINUTE)
        x = self.value(episode.metric, t)
        if x is not None and (x > episode.worst if episode.direction == "high" else x < episode.worst):
            return Worsened(episode, x)
        return None


# --- the database path -----------------------------------------------------------------------

DETECT_LOCK = 7310  # pg advisory lock: one detection at a time


def waiting_tasks() -> dict[int, int]:
    """Each tenant's waiting tasks: in the broker's queues (runtime/queues.py) and held back
    in its own holding list by its plan's caps (runtime/capacity.py)."""
    import redis

    from levqor.redis import client as redis_client
    from runtime import capacity, queues

    counts, _exact = queues.tenant_counts()
    try:
        r = redis_client()
        held_tenants = sorted(int(t) for t in r.smembers(capacity.HELD_TENANTS))
        if held_tenants:
            pipe = r.pipeline(transaction=False)
            for tenant_id in held_tenants:
                pipe.llen(capacity.redis_key(tenant_id, "held"))
            for tenant_id, held in zip(held_tenants, pipe.execute()):
                counts[tenant_id] = counts.get(tenant_id, 0) + held
    except redis.RedisError:
        pass  # the broker's part is still worth writing
    return {t: n for t, n in counts.items() if n > 0}


def sample_queue_depths(minute: datetime) -> int:
    """Write each tenant's waiting tasks into the rollup row of `minute` (the one being
    closed). Returns how many tenants had some."""
    from django.db import connection

    counts = waiting_tasks()
    if not counts:
        return 0
    rows = sorted(counts.items())
    zeros = [0] * BUCKETS
    params = []
    for tenant_id, depth in rows:
        params += [tenant_id, MINUTE, minute, zeros, depth]
    values = ", ".join(["(%s, %s, %s, 0, 0, 0, 0, 0, %s::bigint[], 0, 0, 0, 0, %s)"] * len(rows))
    with connection.cursor() as cursor:
        cursor.execute(
            "INSERT INTO public.runtime_metric_rollups AS r (tenant_id, seconds, start, requests, api_calls, "
            "client_errors, errors, error_minutes, latency_buckets, latency_sum_ms, latency_max_ms, jobs_succeeded, "
            f"jobs_failed, queue_depth) VALUES {values} ON CONFLICT (tenant_id, seconds, start) DO UPDATE SET "
            "queue_depth = GREATEST(r.queue_depth, EXCLUDED.queue_depth)", params)
    return len(rows)


def load(t: datetime, *, tenant_ids=None) -> dict[int, Detector]:
    """A Detector per tenant with rollups in the recent window or an open episode, for the
    minute `t`: its recent minutes, the hours of the previous weeks around `t`, its
    creation, and its episodes of the window (left out of the references)."""
    from runtime.models import Anomaly, MetricRollup
    from tenants.models import Tenant

    since = t - timedelta(minutes=CONFIRM_MINUTES + RECENT_MINUTES)
    recent = MetricRollup.dangerously_all_tenants.filter(seconds=MINUTE, start__gt=since, start__lte=t)
    episodes = Anomaly.dangerously_all_tenants.filter(started_at__lte=t).exclude(resolved_at__lt=since)
    if tenant_ids is not None:
        recent, episodes = recent.filter(tenant_id__in=tenant_ids), episodes.filter(tenant_id__in=tenant_ids)
    detectors: dict[int, Detector] = {}
    for row in recent.iterator(chunk_size=2000):
        detectors.setdefault(row.tenant_id, Detector()).minutes[epoch(row.start)] = Figures.of_row(row)
    for episode in episodes:
        detector = detectors.setdefault(episode.tenant_id, Detector())
        end = None if episode.resolved_at is None else epoch(episode.resolved_at)
        detector.excluded.setdefault(episode.metric, []).append((epoch(episode.started_at), end))
    if not detectors:
        return {}
    created = dict(Tenant.objects.filter(pk__in=list(detectors)).values_list("pk", "created_at"))
    for tenant_id in list(detectors):
        if tenant_id not in created:  # deleted since
            del detectors[tenant_id]
        else:
            detectors[tenant_id].history_since = epoch(created[tenant_id])
    _load_hours(detectors, since.replace(minute=0), t.replace(minute=0))
    return detectors


def _load_hours(detectors: dict[int, Detector], first: datetime, last: datetime) -> None:
    """The hours first..last of each of the previous SEASONAL_WEEKS weeks: hourly rows, plus
    minute rows not folded into them yet."""
    from django.db.models import Q

    from runtime.models import MetricRollup

    periods = Q()
    for k in range(1, SEASONAL_WEEKS + 1):
        periods |= Q(start__gte=first - timedelta(weeks=k), start__lt=last - timedelta(weeks=k) + timedelta(hours=1))
    rows = MetricRollup.dangerously_all_tenants.filter(periods, tenant_id__in=list(detectors))
    for row in rows.iterator(chunk_size=2000):
        hour = hour_of(epoch(row.start))
        hours = detectors[row.tenant_id].hours
        figures = Figures.of_row(row)
        figures.seconds = HOUR  # a minute row counts towards its hour
        if hour in hours:
            hours[hour].add(figures)
        else:
            hours[hour] = figures


def run(*, now: datetime | None = None) -> dict:
    """The minutely task: close the last whole minute, judge every active tenant, open and
    resolve episodes (each with its alert), then let auto-heal act on the open ones. One
    run at a time (a session advisory lock): a run still going makes the next one skip."""
    from django.db import connection
    from django.utils import timezone

    from runtime import autoheal

    now = now or timezone.now()
    t = closed_minute(now)
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_try_advisory_lock(%s)", [DETECT_LOCK])
        if not cursor.fetchone()[0]:
            return {"skipped": "another detection is running"}
    try:
        sampled = sample_queue_depths(t)
        outcome = detect(t, now=now)
        outcome["autoheal"] = autoheal.run(now=now)
    finally:
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_advisory_unlock(%s)", [DETECT_LOCK])
    return {"minute": t.isoformat(), "queue_samples": sampled, **outcome}


def detect(t: datetime, *, now: datetime, tenant_ids=None) -> dict:
    """Judge minute `t` for every tenant with figures; write what changed."""
    from runtime.models import Anomaly

    detectors = load(t, tenant_ids=tenant_ids)
    open_rows = Anomaly.dangerously_all_tenants.filter(resolved_at__isnull=True, tenant_id__in=list(detectors))
    open_by = {(a.tenant_id, a.metric): a for a in open_rows}
    opened, resolved = [], []
    for tenant_id, detector in detectors.items():
        for metric in METRICS:
            row = open_by.get((tenant_id, metric))
            episode = None if row is None else Episode(row.metric, row.direction, row.expected_low,
                                                       row.expected_high, epoch(row.started_at), row.worst, ref=row)
            change = detector.judge(metric, epoch(t), episode)
            if isinstance(change, Opened):
                opened.append(open_episode(tenant_id, change, now=now).pk)
            elif isinstance(change, Resolved):
                resolve_episode(row, at=aware(change.at), now=now)
                resolved.append(row.pk)
            elif isinstance(change, Worsened):
                Anomaly.dangerously_all_tenants.filter(pk=row.pk).update(worst=change.worst)
    return {"tenants": len(detectors), "opened": opened, "resolved": resolved}


def open_episode(tenant_id: int, change: Opened, *, now: datetime):
    """Record the anomaly and raise its alert (one per episode: the dedupe key is its id)."""
    from django.db import transaction

    from compliance.alerts import alert_raise
    from compliance.models import Alert
    from runtime.models import Anomaly

    band = change.band
    with transaction.atomic():
        anomaly = Anomaly.dangerously_all_tenants.create(
            tenant_id=tenant_id, metric=change.metric, direction=change.direction, baseline=band.baseline,
            expected_low=band.low, expected_high=band.high, observed=change.observed, worst=change.observed,
            explanation=change.explanation, started_at=aware(change.started_at), detected_at=now)
        alert = alert_raise(
            kind="metrics.anomaly", tenant_id=tenant_id, severity="warning", audience=Alert.Audience.TENANT,
            message=change.explanation[:1].upper() + change.explanation[1:] + ".",
            metadata={"anomaly_id": anomaly.pk, "metric": change.metric, "direction": change.direction,
                      "observed": change.observed, "expected_low": band.low, "expected_high": band.high,
                      "baseline": band.baseline, "started_at": aware(change.started_at).isoformat()},
            dedupe_key=f"anomaly:{anomaly.pk}")
        anomaly.alert_id = alert.pk
        anomaly.save(update_fields=["alert_id"])
    return anomaly


def resolve_episode(anomaly, *, at: datetime, now: datetime) -> None:
    from django.db import transaction

    from compliance.models import Alert
    from runtime.models import Anomaly

    with transaction.atomic():
        Anomaly.dangerously_all_tenants.filter(pk=anomaly.pk, resolved_at__isnull=True).update(resolved_at=at)
        if anomaly.alert_id:
            Alert.objects.filter(pk=anomaly.alert_id, resolved_at__isnull=True).update(resolved_at=now)
