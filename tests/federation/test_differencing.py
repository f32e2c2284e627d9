"""A differencing attack, run for real: publish the same bucket with and without one target
tenant many times and compare what comes out.

OpenDP draws from the OS CSPRNG and cannot be seeded, so the test samples: N releases each
way of the published p75 of one bucket (k + 1 contributors with the target, k without),
through `aggregate.publish_figures`, the function `aggregate()` calls once the tenants'
clipped values are collected. Bounds carry a 4.5-sigma sampling slack, so a correct
mechanism fails them about once in 10^5 runs.
"""
from __future__ import annotations

import math
import random
import statistics

from federation import aggregate as agg
from federation import kpis, privacy

N = 4000  # releases each way: 5-8 s on a loaded 2-core machine; the slack below shrinks as 1/sqrt(N)
Z = 4.5
METRIC = kpis.METRIC_BY_NAME["workflow_runs"]
UPPER = METRIC.upper
BUCKET = "manufacturing"
# Three small tenants and two heavy ones; the target is heavy too (at the clipping bound), and
# decides the noise-free p75: without it the p75 is anywhere between the two groups, with it
# the p75 is exactly the bound. That is the case a differencing attack exploits best.
OTHERS = [10.0, 12.0, 15.0, UPPER, UPPER]
TARGET = UPPER
# Output bins: below 1000, up to 10 000, up to the bound, and the bound itself (the noise-free
# answer with the target, where its influence concentrates).
EDGES = (1_000, 10_000, UPPER)


def _contribution(value: float) -> agg.Contribution:
    """A tenant as `collect()` leaves it: bucket keys and clipped values, no identity. Only
    workflow_runs is known, so each release is exactly the three quantiles of one figure."""
    return agg.Contribution(groups={"industry": BUCKET, "size_band": None},
                            values={m.name: (METRIC.clip(value) if m is METRIC else None) for m in kpis.METRICS})


def _release(values: list[float]) -> tuple[float, agg.Contribution]:
    """One published p75, and the target's contribution (last) with what it paid."""
    contributions = [_contribution(v) for v in values]
    published = agg.publish_figures(contributions, k=agg.threshold(), epsilon_each=agg.epsilon_per_figure())
    return published["industry"][BUCKET][METRIC.name]["p75"], contributions[-1]


def _best_candidates(values: list[float]) -> list[float]:
    """The p75 candidates of best score: what the mechanism picks among, uniformly, as its
    noise goes to zero."""
    scores = privacy.score_transformation(METRIC.candidates, 0.75)(values)
    return [c for c, s in zip(METRIC.candidates, scores) if s == min(scores)]


def _noise_free_p75(values: list[float]) -> float:
    best = _best_candidates(values)
    return sum(best) / len(best)


def _bin(value: float) -> int:
    return sum(value >= edge for edge in EDGES)


def _bins_beyond_bound(draws_with: list[float], draws_without: list[float], epsilon: float) -> list[int]:
    """Output bins whose probability ratio, with vs without the target, exceeds e^epsilon
    in either direction by more than the sampling error (an empty bin on one side only
    counts as exceeding)."""
    beyond = []
    for b in range(len(EDGES) + 1):
        n_with = sum(_bin(x) == b for x in draws_with)
        n_without = sum(_bin(x) == b for x in draws_without)
        if not n_with and not n_without:
            continue
        if not n_with or not n_without:
            beyond.append(b)
            continue
        p_with, p_without = n_with / len(draws_with), n_without / len(draws_without)
        slack = Z * math.sqrt((1 - p_with) / n_with + (1 - p_without) / n_without)
        if abs(math.log(p_with / p_without)) > epsilon + slack:
            beyond.append(b)
    return beyond


def test_one_tenant_cannot_be_told_apart_or_recovered_from_a_published_figure(settings):
    assert len(OTHERS) == agg.threshold() == settings.LEVQOR_FEDERATION_K  # without the target: exactly k
    with_target, without = OTHERS + [TARGET], list(OTHERS)

    draws_with, draws_without = [], []
    for _ in range(N):
        figure, target = _release(with_target)
        draws_with.append(figure)
        draws_without.append(_release(without)[0])  # still published: k contributors remain
    # What the target paid for this figure (three quantiles; the published p75 is sorted out of
    # all three, so all three count). That is the bound the figure must meet.
    spent = target.spent
    assert 0 < spent <= 3 * agg.epsilon_per_figure() * (1 + 1e-9)
    assert spent < settings.LEVQOR_FEDERATION_EPSILON

    # 1. Indistinguishable: for every output bin, P(with) / P(without) within e^spent both ways.
    for b in range(len(EDGES) + 1):  # every bin is hit often enough to be measured
        assert min(sum(_bin(x) == b for x in draws) for draws in (draws_with, draws_without)) >= 0.02 * N
    assert _bins_beyond_bound(draws_with, draws_without, spent) == []

    # 2. Not recoverable: the target moves the noise-free p75 by most of the range, the
    # published one by no more than pure DP allows for outputs in [0, UPPER], far less.
    raw_shift = _noise_free_p75(with_target) - _noise_free_p75(without)
    assert raw_shift > 0.8 * UPPER
    shift = statistics.fmean(draws_with) - statistics.fmean(draws_without)
    sigma = math.sqrt(statistics.pvariance(draws_with) / N + statistics.pvariance(draws_without) / N)
    assert abs(shift) <= math.expm1(spent) * UPPER + Z * sigma
    assert abs(shift) < raw_shift / 10, (shift, raw_shift)


def test_the_same_check_catches_a_release_without_noise():
    """The bound above can fail: the noise-free mechanism (best candidate, ties broken at
    random) gives the bound itself every time with the target and never without."""
    with_target, without = OTHERS + [TARGET], list(OTHERS)
    leaky_with = [random.choice(_best_candidates(with_target)) for _ in range(500)]
    leaky_without = [random.choice(_best_candidates(without)) for _ in range(500)]
    assert len(EDGES) in _bins_beyond_bound(leaky_with, leaky_without, 3 * agg.epsilon_per_figure())
