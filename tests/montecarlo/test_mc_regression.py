"""Line-fit studies: the OLS slope variance σ²/Σ(x−x̄)², and LAD beating OLS off the Gaussian."""

import itertools
import math

import numpy as np
import pytest
import torch
from scipy import integrate

import lossfn
from lossfn import montecarlo
from lossfn.montecarlo import noise_variance


def ols_slope(x, y):
    """Two-line OLS oracle, batched."""
    xc = x - x.mean(-1, keepdim=True)
    return (xc * (y - y.mean(-1, keepdim=True))).sum(-1) / (xc * xc).sum(-1)


def lad_slope(x, y):
    """Exact LAD by enumeration: an optimal line passes through two of the points."""
    pairs = torch.tensor(list(itertools.combinations(range(x.shape[-1]), 2)))
    xi, xj = x[..., pairs[:, 0]], x[..., pairs[:, 1]]
    yi, yj = y[..., pairs[:, 0]], y[..., pairs[:, 1]]
    slope = (yj - yi) / (xj - xi)
    cut = yi - slope * xi
    cost = (y.unsqueeze(-2) - cut.unsqueeze(-1) - slope.unsqueeze(-1) * x.unsqueeze(-2)).abs().sum(-1)
    return slope.gather(-1, cost.argmin(-1, keepdim=True)).squeeze(-1)


X = torch.linspace(0.0, 2.0, 12, dtype=torch.float64)
SXX = ((X - X.mean()) ** 2).sum().item()


def test_ols_slope_variance_is_sigma2_over_sxx_under_gaussian_noise():
    study = montecarlo.run_regression({"ols": ols_slope}, lossfn.Gaussian(0.5), X, reps=20_000,
                                      beta=3.0, alpha=-1.0, seed=1)
    row = study["ols"]
    assert study.bound == pytest.approx(0.25 / SXX) and study.truth == 3.0
    assert abs(row.variance.item() - study.bound) < 4 * row.variance_se.item()
    assert abs(row.bias.item()) < 4 * row.bias_se.item()
    assert abs(row.mean.item() - 3.0) < 4 * row.mean_se.item()


@pytest.mark.parametrize("noise", [lossfn.Laplace(1.0), lossfn.Contaminated(0.1, 5.0)])
def test_lad_beats_ols_off_the_gaussian(noise):
    # at m = 12 LAD still loses to OLS under Laplace noise (about 0.98): take m = 25
    x = torch.linspace(0.0, 2.0, 25, dtype=torch.float64)
    study = montecarlo.run_regression({"ols": ols_slope, "lad": lad_slope}, noise, x, reps=3_000,
                                      seed=2, chunk_size=1_000)
    row = study["lad"]
    assert row.efficiency.item() - 4 * row.efficiency_se.item() > 1.0
    # OLS variance is Var(ε)/Sxx under any noise with finite variance
    assert abs(study["ols"].variance.item() - study.bound) < 4 * study["ols"].variance_se.item()


def test_one_replicate_fitter_is_vmapped_and_builtin_ols_agrees():
    kw = dict(reps=1_000, seed=3, block_size=256)
    batched = montecarlo.run_regression({"ols": ols_slope}, lossfn.Laplace(1.0), X, **kw)
    single = montecarlo.run_regression({"ols": lambda x, y: ols_slope(x, y)}, lossfn.Laplace(1.0),
                                       X, **kw)
    assert all(torch.equal(a, b) for a, b in zip(batched.moments, single.moments))
    if "ols" in montecarlo.regression_builtins():
        builtin = montecarlo.run_regression({"ols": "ols"}, lossfn.Laplace(1.0), X, **kw)
        torch.testing.assert_close(builtin["ols"].variance, batched["ols"].variance, rtol=1e-10,
                                   atol=0)


def test_noise_variance_against_quadrature():
    noise = lossfn.Huber(1.345, 2.0)
    density = lambda v: math.exp(noise.log_prob(torch.tensor(v, dtype=torch.float64)).item())
    var = integrate.quad(lambda v: v * v * density(v), -np.inf, np.inf)[0]
    assert noise_variance(noise) == pytest.approx(var, rel=1e-9)
    assert noise_variance(lossfn.Gaussian(3.0)) == 9.0
    assert noise_variance(lossfn.Laplace(0.5)) == 0.5
    assert noise_variance(lossfn.Contaminated(0.1, 3.0, 2.0)) == pytest.approx(7.2)


@pytest.mark.parametrize("x,match", [
    (torch.ones(5, dtype=torch.float64), "constant"),
    (torch.ones(3, 2), "1-d tensor"),
    ([0.0, 1.0], "1-d tensor"),
])
def test_bad_design_raises(x, match):
    with pytest.raises(ValueError, match=match):
        montecarlo.run_regression({"ols": ols_slope}, lossfn.Gaussian(1.0), x, reps=10)


@pytest.mark.skipif("lad" not in montecarlo.regression_builtins(), reason="lossfn.fit.lad absent")
def test_builtin_lad_agrees_with_enumeration():
    # LAD is not unique for an even count of points, so compare the studies, not each slope.
    x = torch.linspace(0.0, 2.0, 25, dtype=torch.float64)
    kw = dict(reps=3_000, seed=2, chunk_size=1_000)
    study = montecarlo.run_regression({"lad": "lad", "enum": lad_slope}, lossfn.Laplace(1.0), x,
                                      **kw)
    assert abs(study["lad"].variance.item() / study["enum"].variance.item() - 1) < 0.02
