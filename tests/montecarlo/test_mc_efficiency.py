"""The textbook efficiencies, reproduced within the run's own standard errors.

Oracles: the exact finite-m variance of the sample median (odd m) from the density of
the middle order statistic, ``m!/((k−1)!(m−k)!)·F^{k−1}(1−F)^{m−k}·f``, integrated with
scipy; the asymptotic variance of Huber's estimate with known scale, ``Eψ²/(Eψ')²``.
"""

import math

import numpy as np
import pytest
from scipy import integrate, special, stats

import lossfn
from lossfn import montecarlo


def exact_median_variance(dist, m):
    k = (m + 1) // 2
    log_c = -special.betaln(k, m - k + 1)

    def integrand(x):
        return x * x * math.exp(log_c + (k - 1) * dist.logcdf(x) + (m - k) * dist.logsf(x)
                                + dist.logpdf(x))

    # symmetric about 0: twice the positive half
    return 2 * integrate.quad(integrand, 0, np.inf, limit=200, epsabs=0, epsrel=1e-11)[0]


def huber_asymptotic_efficiency(delta):
    inside = 2 * stats.norm.cdf(delta) - 1
    e_psi2 = inside - 2 * delta * stats.norm.pdf(delta) + 2 * delta**2 * stats.norm.sf(delta)
    return inside**2 / e_psi2


def within(row_value, row_se, expected, slack=0.0, sigmas=4.0):
    return abs(row_value.item() - expected) <= sigmas * row_se.item() + slack


def test_oracles_have_the_textbook_limits():
    # as m grows the exact efficiencies approach 2/π and 2, the latter slowly
    gauss = [(1 / m) / exact_median_variance(stats.norm, m) for m in (11, 101, 1001)]
    laplace = [(2 / m) / exact_median_variance(stats.laplace, m) for m in (11, 101, 1001)]
    assert gauss[0] > gauss[1] > gauss[2] and abs(gauss[2] - 2 / math.pi) < 1e-3
    assert laplace[0] < laplace[1] < laplace[2] < 2 and abs(laplace[1] - 1.72) < 0.005
    assert huber_asymptotic_efficiency(1.345) == pytest.approx(0.95, abs=5e-4)


@pytest.mark.parametrize("m", [11, 25])
def test_median_under_gaussian_noise(m):
    study = montecarlo.run({"mean": "mean", "median": "median"}, lossfn.Gaussian(1.0), m=m,
                           reps=30_000, seed=m)
    exact = (1 / m) / exact_median_variance(stats.norm, m)
    row = study["median"]
    assert row.efficiency_se.item() < 0.01
    assert within(row.efficiency, row.efficiency_se, exact)
    assert within(row.variance, row.variance_se, 1 / m / exact)
    # the mean attains the Cramér–Rao bound σ²/m
    assert study.bound == pytest.approx(1 / m)
    assert within(study["mean"].mse, study["mean"].mse_se, study.bound)
    assert within(study["mean"].variance, study["mean"].variance_se, study.bound)


@pytest.mark.parametrize("m", [25, 101])
def test_median_under_laplace_noise(m):
    study = montecarlo.run({"mean": "mean", "median": "median"}, lossfn.Laplace(1.0), m=m,
                           reps=20_000, seed=m)
    exact = (2 / m) / exact_median_variance(stats.laplace, m)
    row = study["median"]
    assert row.efficiency_se.item() < 0.04
    assert within(row.efficiency, row.efficiency_se, exact)
    assert row.efficiency.item() > 1.3


def test_huber_known_scale_is_95_percent_efficient_at_the_gaussian():
    m = 50
    study = montecarlo.run({"mean": "mean", "huber": montecarlo.huber(delta=1.345, scale=1.0)},
                           lossfn.Gaussian(1.0), m=m, reps=8_000, seed=7)
    row = study["huber"]
    assert row.efficiency_se.item() < 0.008
    # finite-m slack 0.01: the 0.95 is the m → ∞ value
    assert within(row.efficiency, row.efficiency_se, huber_asymptotic_efficiency(1.345), 0.01)


def test_huber_beats_the_mean_under_contamination():
    study = montecarlo.run({"mean": "mean", "huber": "huber"}, lossfn.Contaminated(0.1, 3.0),
                           m=25, reps=8_000, seed=8)
    row = study["huber"]
    assert row.efficiency.item() - 4 * row.efficiency_se.item() > 1.0
    # and the mean's variance is Var(ε)/m = 1.8/m
    assert within(study["mean"].variance, study["mean"].variance_se, 1.8 / 25)
