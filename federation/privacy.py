"""The differential-privacy mechanism, from OpenDP.

Each published figure is a quantile (p25, p50, p75) of the clipped values of one metric in
one bucket, chosen among fixed candidates by OpenDP's private quantile mechanism (an
exponential-mechanism selection, pure epsilon-DP). The neighbouring relation is one tenant
added or removed (symmetric distance 1: a tenant gives at most one value per bucket and
metric), so `measurement.map(1)` is exactly the epsilon the figure costs any one tenant.

OpenDP samples from the operating system's CSPRNG and cannot be seeded, by design: tests
check the mechanism's calibration (`map`, the score sensitivity), never its draws.
"""
from __future__ import annotations

from functools import lru_cache

import opendp.prelude as dp

# make_private_quantile is in OpenDP's "contrib" set (implemented and tested, not yet
# through OpenDP's formal vetting); docs/architecture.md says so.
dp.enable_features("contrib")

QUANTILES = (("p25", 0.25), ("p50", 0.5), ("p75", 0.75))
NEIGHBOUR = 1  # symmetric distance between datasets with and without one tenant


def _domain():
    return dp.vector_domain(dp.atom_domain(T=float, nan=False))


@lru_cache(maxsize=256)
def quantile_measurement(candidates: tuple[float, ...], alpha: float, epsilon: float):
    """The quantile measurement whose noise scale is the smallest that costs at most
    `epsilon` per tenant (found by OpenDP's binary search over the scale)."""

    def make(scale: float):
        return dp.m.make_private_quantile(_domain(), dp.symmetric_distance(), dp.max_divergence(),
                                          candidates=list(candidates), alpha=alpha, scale=scale)

    return make(dp.binary_search_param(make, d_in=NEIGHBOUR, d_out=epsilon))


def score_transformation(candidates: tuple[float, ...], alpha: float):
    """The deterministic half of the quantile mechanism (each candidate's score); its
    `map(1)` is how far one tenant can move any score."""
    return dp.t.make_quantile_score_candidates(_domain(), dp.symmetric_distance(), candidates=list(candidates),
                                               alpha=alpha)


def noisy_quantiles(values: list[float], candidates: tuple[float, ...], epsilon_each: float) -> tuple[dict, float]:
    """p25/p50/p75 of `values` (already clipped), and the epsilon they cost one tenant.
    The three are sorted afterwards: post-processing, free of privacy cost."""
    figures, spent = [], 0.0
    for _, alpha in QUANTILES:
        measurement = quantile_measurement(candidates, alpha, epsilon_each)
        figures.append(float(measurement(list(values))))
        spent += measurement.map(NEIGHBOUR)
    return dict(zip((name for name, _ in QUANTILES), sorted(figures))), spent
