"""Releases: k-anonymity threshold, opt-out, privacy budget, no identity in the payload,
and the differencing bound."""
from __future__ import annotations

import json
import math
import re

import pytest
from django.core.management import CommandError, call_command

from federation import aggregate as agg
from federation import kpis, privacy, services
from federation.models import Release
from tenants.context import tenant_context
from tests.federation.conftest import PERIOD


def _published(release, grouping="industry"):
    return release.payload["groups"].get(grouping, {})


def test_bucket_with_k_minus_one_tenants_is_withheld_and_not_even_named(opted_in, settings):
    assert settings.LEVQOR_FEDERATION_K == 5
    opted_in(5, "retail")
    opted_in(4, "healthcare")
    release = agg.aggregate(PERIOD)
    assert set(_published(release)) == {"retail"}
    assert set(_published(release)["retail"]) >= {"workflow_runs", "job_success_rate", "active_members", "api_calls"}
    figures = _published(release)["retail"]["workflow_runs"]
    assert figures["p25"] <= figures["p50"] <= figures["p75"]
    assert all(0 <= v <= 100_000 for v in figures.values())  # inside the clipping bounds
    assert "healthcare" not in json.dumps(release.payload)


def test_opt_out_removes_the_tenant_from_the_next_release(opted_in):
    tenants = opted_in(5, "media")
    assert "media" in _published(agg.aggregate(PERIOD))
    tenant, _ = tenants[0]
    with tenant_context(tenant):
        services.federation_update(tenant_id=tenant.id, opted_in=False, industry="media", actor="test")
    assert tenant.id not in [m.tenant_id for m in agg.participants()]
    assert "media" not in _published(agg.aggregate(PERIOD))  # 4 left: below k


def test_no_tenant_identity_in_payload_or_public_page(opted_in, client):
    from tenants.models import Domain

    tenants = opted_in(5, "software")
    agg.aggregate(PERIOD)
    release = Release.objects.get()
    text = json.dumps(release.payload)
    strings = []  # every key and string value of the payload

    def walk(node):
        if isinstance(node, dict):
            strings.extend(node)
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)
        elif isinstance(node, str):
            strings.append(node)

    walk(release.payload)
    page = client.get("/insights/benchmarks").content.decode()
    for tenant, _ in tenants:
        identities = [tenant.slug, tenant.name, tenant.admin_email,
                      *Domain.objects.filter(tenant=tenant).values_list("domain", flat=True)]
        for identity in identities:
            assert identity.lower() not in text.lower() and identity.lower() not in page.lower()
        # Ids are numbers: look for them as whole tokens in the payload's keys and strings.
        assert not any(re.search(rf"\b{tenant.id}\b", s) for s in strings)


def test_budget_cap_refuses_a_release(opted_in, settings):
    settings.LEVQOR_FEDERATION_EPSILON = 1.0
    settings.LEVQOR_FEDERATION_EPSILON_CAP = 1.5
    opted_in(5, "education")
    call_command("federation_aggregate", "--period", PERIOD)
    first = Release.objects.get()
    assert 0 < first.epsilon <= 1.0 + agg.FLOAT_SLACK
    with pytest.raises(CommandError, match="budget exhausted"):
        call_command("federation_aggregate", "--period", PERIOD)
    with pytest.raises(agg.BudgetExhausted):
        agg.aggregate(PERIOD)
    from federation.tasks import aggregate as task

    assert task.apply(args=[PERIOD]).get()["reason"] == "budget_exhausted"
    assert Release.objects.count() == 1


def test_bad_period_is_refused(db):
    with pytest.raises(CommandError, match="YYYYMM"):
        call_command("federation_aggregate", "--period", "2026-13")


def test_differencing_attack_is_bounded_by_epsilon(opted_in, settings):
    """Two releases, with and without one tenant. Every figure is an OpenDP private quantile
    whose privacy map says one tenant (symmetric distance 1) costs at most epsilon_each; the
    tenant's clipped value moves every candidate's score by at most the scorer's own
    sensitivity, so the map applies to this very pair of datasets. Over the whole release the
    costs add up to at most LEVQOR_FEDERATION_EPSILON = eps: the probability of any
    published payload differs by a factor of at most e^eps between the two releases, so an
    attacker comparing them tells 'with' from 'without' with an advantage of at most
    tanh(eps / 2) (about 0.46 at eps = 1), and learns the value itself less than that."""
    tenants = opted_in(6, "manufacturing")
    eps_each = agg.epsilon_per_figure()
    assert eps_each * len(agg.GROUPINGS) * len(kpis.METRICS) * len(privacy.QUANTILES) == pytest.approx(
        settings.LEVQOR_FEDERATION_EPSILON)
    contributions = agg.collect(PERIOD)
    target = agg.contribution_of(agg.participants().get(tenant=tenants[0][0]), PERIOD)
    with_all = [c.values["workflow_runs"] for c in contributions]
    without = list(with_all)
    without.remove(target.values["workflow_runs"])
    metric = kpis.METRIC_BY_NAME["workflow_runs"]
    for _, alpha in privacy.QUANTILES:
        measurement = privacy.quantile_measurement(metric.candidates, alpha, eps_each)
        assert measurement.map(privacy.NEIGHBOUR) <= eps_each * (1 + 1e-9)
        scorer = privacy.score_transformation(metric.candidates, alpha)
        moved = max(abs(a - b) for a, b in zip(scorer(with_all), scorer(without)))
        assert moved <= scorer.map(privacy.NEIGHBOUR)
    release = agg.aggregate(PERIOD)
    assert release.epsilon <= settings.LEVQOR_FEDERATION_EPSILON * (1 + 1e-9)
    assert math.tanh(release.epsilon / 2) < 0.47


def test_a_tenant_pays_only_for_figures_it_feeds(opted_in):
    """Withheld buckets cost nothing; a release's epsilon is the largest any tenant paid."""
    opted_in(4, "healthcare")
    assert agg.aggregate(PERIOD).epsilon == 0  # nothing published, nothing spent


def test_opt_out_with_k_still_in_keeps_the_bucket_published_from_the_rest(opted_in, settings):
    tenants = opted_in(settings.LEVQOR_FEDERATION_K + 1, "media")
    leaving, _ = tenants[0]
    with tenant_context(leaving):
        services.federation_update(tenant_id=leaving.id, opted_in=False, industry="media", actor="test")
    remaining = agg.collect(PERIOD)
    assert len(remaining) == settings.LEVQOR_FEDERATION_K
    release = agg.aggregate(PERIOD)
    figures = _published(release)["media"]["workflow_runs"]
    assert figures["p25"] <= figures["p50"] <= figures["p75"]
    assert 0 < release.epsilon <= settings.LEVQOR_FEDERATION_EPSILON * (1 + 1e-9)


def test_k_of_six_withholds_a_bucket_of_five(opted_in, settings):
    settings.LEVQOR_FEDERATION_K = 6
    opted_in(5, "retail")
    release = agg.aggregate(PERIOD)
    assert release.k == 6 and release.payload["k"] == 6
    assert "retail" not in json.dumps(release.payload["groups"]) and release.epsilon == 0


def test_k_never_goes_below_five_even_when_the_setting_does(opted_in, settings):
    """settings.py floors LEVQOR_FEDERATION_K at 5 when it reads the environment; the
    aggregation applies the same floor itself, so a setting replaced later cannot lower it."""
    settings.LEVQOR_FEDERATION_K = 2
    opted_in(4, "retail")
    release = agg.aggregate(PERIOD)
    assert release.k == agg.MIN_K == 5
    assert release.payload["groups"] == {}


def test_budget_refusal_of_the_scheduled_release_alerts_staff_once(opted_in, settings):
    from compliance.models import Alert
    from federation.tasks import aggregate as task

    settings.LEVQOR_FEDERATION_EPSILON = 1.0
    settings.LEVQOR_FEDERATION_EPSILON_CAP = 1.5
    opted_in(5, "education")
    assert task.apply(args=[PERIOD]).get()["published"] is True
    assert not Alert.objects.filter(kind="federation.budget_exhausted").exists()
    for _ in range(3):  # the refusal repeats every month until someone acts: one alert
        assert task.apply(args=[PERIOD]).get()["reason"] == "budget_exhausted"
    alert = Alert.objects.get(kind="federation.budget_exhausted")
    assert alert.audience == Alert.Audience.STAFF and alert.tenant_id is None and alert.resolved_at is None
    assert "LEVQOR_FEDERATION_EPSILON_CAP" in alert.message and alert.metadata_json["cap"] == 1.5
    assert Release.objects.count() == 1

    settings.LEVQOR_FEDERATION_EPSILON_CAP = 2.5  # staff raise the cap: one more release, then a new alert
    assert task.apply(args=[PERIOD]).get()["published"] is True
    assert task.apply(args=[PERIOD]).get()["reason"] == "budget_exhausted"
    assert sorted(Alert.objects.filter(kind="federation.budget_exhausted").values_list("metadata_json__cap", flat=True)) \
        == [1.5, 2.5]


def test_p95_latency_is_published_when_runtime_rollups_exist(opted_in):
    from runtime import metrics
    from runtime.models import MetricRollup
    from tests.federation.conftest import IN_PERIOD

    tenants = opted_in(5, "retail")
    assert "p95_latency_ms" not in _published(agg.aggregate(PERIOD))["retail"]  # no rollups: skipped, not zero
    for i, (tenant, _) in enumerate(tenants):
        buckets = [0] * metrics.BUCKETS
        buckets[metrics.bucket_of(40)] = 95  # 95 requests up to 50 ms, 5 up to 130 ms: p95 is the 50 ms bucket
        buckets[metrics.bucket_of(120)] = 5
        MetricRollup.dangerously_all_tenants.create(
            tenant_id=tenant.id, seconds=3600, start=IN_PERIOD.replace(hour=i), requests=100, api_calls=100,
            latency_buckets=buckets, latency_sum_ms=95 * 40 + 5 * 120, latency_max_ms=125.0 + i)
    with tenant_context(tenants[0][0]):
        assert services.own_kpis(tenants[0][0].id, PERIOD)["p95_latency_ms"] == 50.0
    figures = _published(agg.aggregate(PERIOD))["retail"]["p95_latency_ms"]
    assert set(figures) == {"p25", "p50", "p75"}
    assert all(0 <= v <= kpis.METRIC_BY_NAME["p95_latency_ms"].upper for v in figures.values())
