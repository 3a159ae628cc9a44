"""Contaminated normal: density, sampler, moments and Fisher information against scipy."""

import math

import numpy as np
import pytest
import torch
from scipy import integrate, optimize, special, stats

import lossfn
from lossfn import Contaminated

CASES = [(0.1, 3.0, 1.0), (0.25, 10.0, 0.5), (0.0, 3.0, 2.0), (1.0, 2.0, 1.0)]


def scipy_logpdf(x, eps, k, s):
    parts = []
    if eps < 1:
        parts.append(math.log1p(-eps) + stats.norm.logpdf(x, scale=s))
    if eps > 0:
        parts.append(math.log(eps) + stats.norm.logpdf(x, scale=k * s))
    return special.logsumexp(np.stack(parts), axis=0)


def scipy_cdf(x, eps, k, s):
    return (1 - eps) * stats.norm.cdf(x, scale=s) + eps * stats.norm.cdf(x, scale=k * s)


@pytest.mark.parametrize("eps,k,s", CASES)
def test_log_prob_matches_scipy(eps, k, s):
    x = torch.linspace(-30, 30, 121, dtype=torch.float64)
    got = Contaminated(eps, k, s).log_prob(x)
    np.testing.assert_allclose(got.numpy(), scipy_logpdf(x.numpy(), eps, k, s), rtol=1e-12)


def test_log_prob_matches_torch_mixture_and_gaussian_limit():
    x = torch.linspace(-8, 8, 33)
    noise = Contaminated(0.2, 4.0, 1.5)
    torch.testing.assert_close(noise.log_prob(x), noise.to_distribution().log_prob(x))
    torch.testing.assert_close(Contaminated(0.0, 4.0, 1.5).log_prob(x),
                               lossfn.Gaussian(1.5).log_prob(x))


@pytest.mark.parametrize("eps,k,s", CASES[:3])
def test_sampler_passes_kolmogorov_smirnov(eps, k, s):
    g = torch.Generator().manual_seed(123)
    x = Contaminated(eps, k, s).sample(20_000, generator=g, dtype=torch.float64)
    result = stats.kstest(x.numpy(), lambda v: scipy_cdf(v, eps, k, s))
    assert result.pvalue > 1e-3


def test_sampler_is_reproducible_and_follows_dtype():
    noise = Contaminated(0.1, 3.0)
    a = noise.sample((4, 5), generator=torch.Generator().manual_seed(7), dtype=torch.float32)
    b = noise.sample((4, 5), generator=torch.Generator().manual_seed(7), dtype=torch.float32)
    assert a.dtype == torch.float32 and a.shape == (4, 5) and torch.equal(a, b)
    # the fraction of gross errors is eps: |x| > 4 is ~0 under N(0,1), 18% under N(0, 3²)
    x = noise.sample(100_000, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    expected = 2 * (0.9 * stats.norm.sf(4) + 0.1 * stats.norm.sf(4 / 3))
    assert abs((x.abs() > 4).double().mean().item() - expected) < 4 * math.sqrt(expected / 1e5)


@pytest.mark.parametrize("eps,k,s", CASES)
def test_variance_and_fisher_information_match_quadrature(eps, k, s):
    noise = Contaminated(eps, k, s)
    pdf = lambda v: np.exp(scipy_logpdf(np.asarray(v), eps, k, s))
    lim = 60 * max(k, 1) * s
    var = integrate.quad(lambda v: v * v * pdf(v), -lim, lim, limit=400)[0]
    assert noise.variance() == pytest.approx(var, rel=1e-9)

    def score_sq(v):
        slope = -v * ((1 - eps) * stats.norm.pdf(v, scale=s) / s**2
                      + eps * stats.norm.pdf(v, scale=k * s) / (k * s) ** 2)
        density = pdf(v)
        return slope**2 / density if density > 0 else 0.0  # both underflow far out

    info = integrate.quad(score_sq, -lim, lim, limit=400, points=[0.0])[0]
    assert noise.fisher_information() == pytest.approx(info, rel=1e-9)
    assert noise.location_variance_bound(10) == pytest.approx(1 / (10 * info), rel=1e-9)


def test_fit_is_robust_location_and_nominal_mad_scale():
    eps, k = 0.1, 3.0
    x = Contaminated(eps, k).sample((4, 200_000), generator=torch.Generator().manual_seed(3),
                                    dtype=torch.float64)
    fit = Contaminated(eps, k).fit(x + 2.0)
    # population MAD of the mixture, over Φ⁻¹(3/4)
    q = optimize.brentq(lambda t: scipy_cdf(t, eps, k, 1.0) - 0.75, 0.1, 10)
    torch.testing.assert_close(fit.scale, torch.full((4,), q / stats.norm.ppf(0.75),
                                                     dtype=torch.float64), rtol=0.01, atol=0)
    assert (fit.location - 2.0).abs().max() < 0.02


@pytest.mark.parametrize("kwargs,error", [({"eps": -0.1}, ValueError), ({"eps": 1.5}, ValueError),
                                           ({"k": 0.0}, ValueError), ({"scale": -1.0}, ValueError),
                                           ({"eps": "a"}, TypeError)])
def test_bad_parameters_raise(kwargs, error):
    with pytest.raises(error, match="Contaminated"):
        Contaminated(**kwargs)


def test_is_a_noise_model_and_exported():
    assert isinstance(Contaminated(), lossfn.NoiseModel)
    assert lossfn.montecarlo.Contaminated is Contaminated


def test_log_prob_composes_with_vmap_and_grad():
    noise = Contaminated(0.2, 4.0, 1.5)
    x = torch.linspace(-6, 6, 13, dtype=torch.float64)
    torch.testing.assert_close(torch.func.vmap(noise.log_prob)(x), noise.log_prob(x))
    # d log p / dε against the closed-form score of the mixture, via scipy densities
    score = torch.func.vmap(torch.func.grad(noise.log_prob))(x).numpy()
    v = x.numpy()
    a = 0.8 * stats.norm.pdf(v, scale=1.5)
    b = 0.2 * stats.norm.pdf(v, scale=6.0)
    np.testing.assert_allclose(score, -v * (a / 1.5**2 + b / 6.0**2) / (a + b), rtol=1e-10)
