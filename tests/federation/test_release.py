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
