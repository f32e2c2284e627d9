"""Building a release: collect each opted-in tenant's clipped KPIs, group them, publish
the noisy quantiles of the buckets with at least k contributors, within the budget.

Tenant identity stops at `collect()`: a `Contribution` holds only the bucket keys and the
clipped values, so nothing downstream can put an id, name or slug into a payload.
"""
from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from datetime import datetime

from django.conf import settings
from django.db import connection, transaction
from django.db.models import Sum
from django.utils import timezone

from federation import kpis, privacy
from federation.models import FederationMembership, Release
from tenants.context import tenant_context
from tenants.models import Tenant

GROUPINGS = ("industry", "size_band")
LOCK_ID = 0x4C564650  # pg advisory lock: one release at a time, so two cannot both pass the budget check
FLOAT_SLACK = 1e-9  # OpenDP's binary search lands just under the target epsilon; sums may round above
MIN_K = 5  # the floor settings.py also applies; kept here so an override cannot publish a smaller bucket


class BudgetExhausted(Exception):
    def __init__(self, spent: float, wanted: float, cap: float):
        super().__init__(f"privacy budget exhausted: {spent:.4g} spent + {wanted:.4g} for this release > cap {cap:.4g}")
        self.spent, self.wanted, self.cap = spent, wanted, cap


@dataclass
class Contribution:
    groups: dict[str, str | None]
    values: dict[str, float | None]
    spent: float = field(default=0.0)  # epsilon this contribution's tenant paid in the release being built


def previous_period(now: datetime | None = None) -> str:
    """The last full calendar month (UTC): a month still running would publish partial figures."""
    now = now or timezone.now()
    year, month = (now.year, now.month - 1) if now.month > 1 else (now.year - 1, 12)
    return f"{year:04d}{month:02d}"


def epsilon_per_figure() -> float:
    """Split the release's epsilon evenly over every figure one tenant can feed: one bucket
    per grouping, every metric, three quantiles (basic sequential composition)."""
    return settings.LEVQOR_FEDERATION_EPSILON / (len(GROUPINGS) * len(kpis.METRICS) * len(privacy.QUANTILES))


def spent_total() -> float:
    return Release.objects.aggregate(total=Sum("epsilon"))["total"] or 0.0


def participants():
    """Opted-in memberships of active tenants, read fresh: an opt-out before this call is
    honoured by this release."""
    return (FederationMembership.dangerously_all_tenants.filter(opted_in=True, tenant__status=Tenant.Status.ACTIVE)
            .select_related("tenant").order_by("pk"))


def contribution_of(membership: FederationMembership, period: str) -> Contribution:
    with tenant_context(membership.tenant):
        raw = kpis.tenant_kpis(membership.tenant_id, period)
    return Contribution(groups={"industry": membership.industry or None,
                                "size_band": kpis.size_band(int(raw["active_members"]))},
                        values=kpis.clipped(raw))


def collect(period: str, progress=None) -> list[Contribution]:
    contributions = []
    for membership in participants():
        contributions.append(contribution_of(membership, period))
        if progress:
            progress.advance()
    return contributions


def buckets(contributions: list[Contribution], grouping: str) -> dict[str, list[Contribution]]:
    grouped = defaultdict(list)
    for contribution in contributions:
        key = contribution.groups[grouping]
        if key is not None:
            grouped[key].append(contribution)
    return grouped


def publish_figures(contributions: list[Contribution], *, k: int, epsilon_each: float) -> dict:
    """{grouping: {bucket: {metric: {p25, p50, p75}}}} for every (bucket, metric) with at least
    k contributors; others are left out entirely (a withheld bucket is not even named)."""
    published: dict[str, dict] = {}
    for grouping in GROUPINGS:
        for key, members in sorted(buckets(contributions, grouping).items()):
            for metric in kpis.METRICS:
                feeding = [c for c in members if c.values[metric.name] is not None]
                if len(feeding) < k:
                    continue
                figures, cost = privacy.noisy_quantiles([c.values[metric.name] for c in feeding], metric.candidates,
                                                        epsilon_each)
                published.setdefault(grouping, {}).setdefault(key, {})[metric.name] = figures
                for c in feeding:
                    c.spent += cost
    return published


def payload_for(period: str, published: dict, *, k: int, epsilon: float) -> dict:
    return {
        "period": period, "k": k, "epsilon": round(epsilon, 6),
        "mechanism": "OpenDP private quantile (pure epsilon-DP), one clipped value per tenant per bucket",
        "metrics": {m.name: {"label": m.label, "unit": m.unit, "bounds": [m.lower, m.upper]} for m in kpis.METRICS},
        "groups": published,
    }


def threshold() -> int:
    """k for this release: the configured one, never below MIN_K. settings.py floors the
    environment variable at import, but settings can be replaced at run time (tests,
    override_settings); the release must not depend on that having happened."""
    return max(MIN_K, int(settings.LEVQOR_FEDERATION_K))


def aggregate(period: str | None = None, *, progress_factory=None) -> Release:
    """Build and store one release. Raises BudgetExhausted (storing nothing) when the
    configured epsilon would take the total past LEVQOR_FEDERATION_EPSILON_CAP."""
    period = period or previous_period()
    kpis.period_bounds(period)  # refuse a malformed period before any work
    memberships = participants().count()
    progress = progress_factory(memberships) if progress_factory else None
    contributions = collect(period, progress)
    k, cap = threshold(), settings.LEVQOR_FEDERATION_EPSILON_CAP
    with transaction.atomic():
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_advisory_xact_lock(%s)", [LOCK_ID])
        spent = spent_total()
        if spent + settings.LEVQOR_FEDERATION_EPSILON > cap + FLOAT_SLACK:
            raise BudgetExhausted(spent, settings.LEVQOR_FEDERATION_EPSILON, cap)
        published = publish_figures(contributions, k=k, epsilon_each=epsilon_per_figure())
        epsilon = max((c.spent for c in contributions), default=0.0)
        release = Release.objects.create(period=period, k=k, epsilon=epsilon,
                                         payload=payload_for(period, published, k=k, epsilon=epsilon))
    if progress:
        progress.finish()
    return release


def latest_release() -> Release | None:
    return Release.objects.first()
