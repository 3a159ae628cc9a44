"""Noise models: densities, exact samplers, fits, distributions, validation."""

import math

import numpy as np
import pytest
import torch
from scipy import integrate, special, stats

import lossfn
from lossfn.nll import huber_log_normalizer


def _huber_cdf(u, delta):
    """CDF of the standard Huber density exp(-ρ_δ(u))/Z(δ), written out by hand."""
    z = math.exp(huber_log_normalizer(delta))
    u = np.asarray(u, dtype=float)
    left = np.exp(delta * np.minimum(u, -delta) + 0.5 * delta**2) / (delta * z)
    centre = math.sqrt(2 * math.pi) * (special.ndtr(np.clip(u, -delta, delta)) - special.ndtr(-delta)) / z
    right = np.where(u > delta, np.exp(-delta * np.maximum(u, delta) + 0.5 * delta**2) / (delta * z), 0.0)
    tail_mass = math.exp(-0.5 * delta**2) / (delta * z)
    return np.where(u <= -delta, left, np.where(u <= delta, tail_mass + centre, 1.0 - right))


def test_huber_cdf_helper_matches_quadrature():
    delta = 1.345
    for u in (-3.0, -1.0, 0.2, 2.5):
        ref = integrate.quad(lambda e: math.exp(-lossfn.Huber(delta).nll(
            torch.zeros(1, dtype=torch.float64), torch.tensor([e], dtype=torch.float64)).item()),
            -np.inf, u, epsabs=1e-13)[0]
        assert _huber_cdf(u, delta) == pytest.approx(ref, abs=1e-9)


@pytest.mark.parametrize("noise, cdf", [
    (lossfn.Gaussian(2.0), stats.norm(scale=2.0).cdf),
    (lossfn.Laplace(0.5), stats.laplace(scale=0.5).cdf),
    (lossfn.Huber(1.345), lambda u: _huber_cdf(u, 1.345)),
    (lossfn.Huber(0.5, 3.0), lambda u: _huber_cdf(np.asarray(u) / 3.0, 0.5)),
])
def test_samplers_pass_a_ks_test(noise, cdf):
    x = noise.sample(20_000, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    assert stats.kstest(x.numpy(), cdf).pvalue > 1e-3


@pytest.mark.parametrize("noise", [lossfn.Gaussian(1.5), lossfn.Laplace(0.7), lossfn.Huber(1.0, 2.0)])
def test_sampler_seeding(noise):
    a = noise.sample((3, 4), generator=torch.Generator().manual_seed(5))
    b = noise.sample((3, 4), generator=torch.Generator().manual_seed(5))
    c = noise.sample((3, 4), generator=torch.Generator().manual_seed(6))
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert a.shape == (3, 4) and a.dtype == torch.get_default_dtype()
    state = torch.random.get_rng_state()
    noise.sample(10, generator=torch.Generator().manual_seed(1))
    assert torch.equal(state, torch.random.get_rng_state())  # the global RNG is untouched


@pytest.mark.parametrize("model", [lossfn.Gaussian, lossfn.Laplace, lambda s: lossfn.Huber(1.0, s),
                                   lambda s: lossfn.Contaminated(0.1, 3.0, scale=s)])
def test_tensor_scale_sets_dtype_and_appends_its_shape(model):
    scale = torch.tensor([1.0, 100.0], dtype=torch.float64)
    x = model(scale).sample((5000, 3), generator=torch.Generator().manual_seed(0))
    assert x.shape == (5000, 3, 2) and x.dtype == torch.float64
    ratio = x[..., 1].abs().mean() / x[..., 0].abs().mean()
    assert 90 < ratio < 110


@pytest.mark.parametrize("noise, dist", [
    (lossfn.Gaussian(0.7), torch.distributions.Normal(0.0, 0.7)),
    (lossfn.Laplace(1.3), torch.distributions.Laplace(0.0, 1.3)),
])
def test_log_prob_and_to_distribution(noise, dist, gen):
    r = torch.randn(50, generator=gen, dtype=torch.float64) * 3
    torch.testing.assert_close(noise.log_prob(r), dist.log_prob(r).double())
    d = noise.to_distribution(loc=1.0)
    assert type(d) is type(dist) and float(d.scale) == pytest.approx(float(dist.scale))
    assert lossfn.Huber().to_distribution() is None


def test_fit_matches_scipy(gen):
    x = torch.randn(3, 101, generator=gen, dtype=torch.float64) * 2 + 5
    g = lossfn.Gaussian().fit(x)
    lp = lossfn.Laplace().fit(x)
    for i in range(3):
        mu, sd = stats.norm.fit(x[i].numpy())
        assert (g.location[i].item(), g.scale[i].item()) == pytest.approx((mu, sd), rel=1e-12)
        loc, b = stats.laplace.fit(x[i].numpy())
        assert (lp.location[i].item(), lp.scale[i].item()) == pytest.approx((loc, b), rel=1e-12)


def test_huber_fit_is_robust():
    x = torch.cat([torch.linspace(-1, 1, 21, dtype=torch.float64), torch.tensor([1e6], dtype=torch.float64)])
    fit = lossfn.Huber().fit(x)
    assert abs(fit.location.item()) < 0.2 and abs(x.mean().item()) > 4e4


def test_loss_property_is_the_canonical_loss(gen):
    p, t = torch.randn(2, 30, generator=gen, dtype=torch.float64) * 3
    assert lossfn.Gaussian(2.0).loss is lossfn.mse
    assert lossfn.Laplace(2.0).loss is lossfn.mae
    h = lossfn.Huber(1.5, 2.0)
    torch.testing.assert_close(h.loss(p, t), torch.nn.functional.huber_loss(p, t, delta=3.0))
    # The NLL is the canonical loss rescaled plus a constant (Huber: ρ_δ(ε/s) = ρ_{δs}(ε)/s²).
    diff = h.nll(p, t, reduction="none") - h.loss(p, t, reduction="none") / 4.0
    assert diff.max() - diff.min() < 1e-12


@pytest.mark.parametrize("delta", [0.5, 1.345, 2.5])
def test_huber_cramer_rao_bound_from_fisher_information(delta):
    # I = ∫ ψ(u)² p(u) du for the score ψ = ρ'; computed here by quadrature.
    z = math.exp(huber_log_normalizer(delta))
    psi2 = lambda u: min(abs(u), delta) ** 2 * math.exp(-(0.5 * u * u if abs(u) <= delta else delta * (abs(u) - 0.5 * delta))) / z
    info = sum(integrate.quad(psi2, a, b, epsabs=1e-13)[0] for a, b in [(-np.inf, -delta), (-delta, delta), (delta, np.inf)])
    assert lossfn.Huber(delta, 2.0).location_variance_bound(10) == pytest.approx(4.0 / (10 * info), rel=1e-9)
    assert lossfn.Gaussian(2.0).location_variance_bound(10) == 0.4
    assert lossfn.Laplace(2.0).location_variance_bound(10) == 0.4


def test_models_are_immutable_and_validated():
    g = lossfn.Gaussian(1.0)
    with pytest.raises(Exception):
        g.scale = 2.0
    for bad in (0.0, -1.0, math.inf, math.nan):
        with pytest.raises(ValueError, match="scale"):
            lossfn.Laplace(bad)
    with pytest.raises(ValueError, match="delta"):
        lossfn.Huber(delta=-1.0)
    with pytest.raises(ValueError, match="everywhere"):
        lossfn.Gaussian(torch.tensor([1.0, -1.0]))
    with pytest.raises(TypeError):
        lossfn.Gaussian("1.0")
