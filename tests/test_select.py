"""lossfn.select against scipy: Huber scale MLE, maximized log-likelihoods, AIC ranking."""

import math

import numpy as np
import pytest
import torch
from scipy import integrate, optimize, stats

import lossfn
from lossfn.select import (LOSS_OF, NOISE_MODELS, aic, compare_noise, huber_scale_mle,
                           max_loglik)

F64 = torch.float64


def _residuals(seed, shape=(4, 41)):
    g = torch.Generator().manual_seed(seed)
    r = torch.randn(shape, generator=g, dtype=F64)
    r[0, 5] = 25.0  # one gross outlier in the first sample
    return r * torch.linspace(0.3, 3.0, shape[0], dtype=F64)[:, None]


def _huber_logpdf(u, delta, s):
    """log of exp(-ρ_δ(u/s)) / (s·Z(δ)) with Z by numerical integration (independent of lossfn)."""
    rho = lambda v: np.where(np.abs(v) <= delta, 0.5 * v * v, delta * (np.abs(v) - 0.5 * delta))
    z, _ = integrate.quad(lambda v: np.exp(-rho(v)), -np.inf, np.inf)
    return -rho(u / s) - np.log(s) - np.log(z)


@pytest.mark.parametrize("delta", [0.5, 1.345, 3.0, 50.0])
def test_huber_scale_mle_solves_the_score_equation(delta):
    r = _residuals(0)
    s = huber_scale_mle(r, delta=delta)
    for i in range(r.shape[0]):
        u = r[i].abs().numpy()
        score = lambda t: np.mean(np.minimum(u**2 / t**2, delta * u / t)) - 1
        ref = optimize.brentq(score, 1e-8, 1e8, xtol=1e-15, rtol=1e-14)
        assert s[i].item() == pytest.approx(ref, rel=1e-10)


def test_huber_scale_mle_maximizes_the_likelihood():
    r = _residuals(1)[1].numpy()
    delta = 1.345
    s = huber_scale_mle(torch.from_numpy(r), delta=delta).item()
    best = optimize.minimize_scalar(lambda t: -_huber_logpdf(r, delta, t).sum(),
                                    bounds=(1e-3, 100), method="bounded",
                                    options={"xatol": 1e-10})
    assert s == pytest.approx(best.x, rel=1e-6)


def test_huber_scale_mle_limits():
    r = torch.tensor([-2.0, -1.0, 1.0, 2.0], dtype=F64)
    assert huber_scale_mle(r, delta=1e6).item() == pytest.approx(math.sqrt(2.5), rel=1e-12)
    # δ → 0: all points linear, s = δ·mean|ε| → 0 proportionally.
    assert huber_scale_mle(r, delta=1e-6).item() == pytest.approx(1e-6 * 1.5, rel=1e-6)
    assert huber_scale_mle(torch.zeros(5, dtype=F64)).item() == 0.0


def test_max_loglik_gaussian_and_laplace_match_scipy_fits():
    r = _residuals(2)
    mask = torch.rand(r.shape, generator=torch.Generator().manual_seed(3)) > 0.25
    gauss = max_loglik(r, noise="gaussian", mask=mask)
    lap = max_loglik(r, noise="laplace", mask=mask)
    for i in range(r.shape[0]):
        x = r[i][mask[i]].numpy()
        mu, sd = stats.norm.fit(x)
        assert gauss.loglik[i].item() == pytest.approx(stats.norm.logpdf(x, mu, sd).sum(), rel=1e-12)
        loc, b = stats.laplace.fit(x)
        assert lap.loglik[i].item() == pytest.approx(stats.laplace.logpdf(x, loc, b).sum(), rel=1e-10)
        assert lap.scale[i].item() == pytest.approx(b, rel=1e-10)
        assert gauss.n[i].item() == len(x)


def test_max_loglik_huber_is_the_joint_maximum():
    r = _residuals(4)
    fitted = max_loglik(r, noise="huber", delta=1.345)
    for i in range(r.shape[0]):
        x = r[i].numpy()
        # Independent: maximize the density (Z by quadrature) over (μ, log s) with scipy.
        objective = lambda p: -_huber_logpdf(x - p[0], 1.345, math.exp(p[1])).sum()
        start = [np.median(x), math.log(stats.median_abs_deviation(x, scale="normal"))]
        best = optimize.minimize(objective, start, method="Nelder-Mead",
                                 options={"xatol": 1e-10, "fatol": 1e-12, "maxiter": 20_000})
        assert fitted.loglik[i].item() == pytest.approx(-best.fun, rel=1e-9)
        assert fitted.loglik[i].item() >= -best.fun - 1e-9
        assert fitted.location[i].item() == pytest.approx(best.x[0], abs=1e-5 * x.std())
        assert fitted.scale[i].item() == pytest.approx(math.exp(best.x[1]), rel=1e-5)


def test_max_loglik_vmaps_and_differentiates_in_delta():
    r = _residuals(8)[1]
    deltas = torch.tensor([0.7, 1.345, 2.0], dtype=F64)
    mapped = torch.func.vmap(lambda d: max_loglik(r, noise="huber", delta=d).loglik)(deltas)
    looped = torch.stack([max_loglik(r, noise="huber", delta=float(d)).loglik for d in deltas])
    torch.testing.assert_close(mapped, looped)
    # By the envelope theorem the total derivative is the partial one at the optimum:
    # compare autograd with a central difference of the maximized value.
    d = torch.tensor(1.345, dtype=F64, requires_grad=True)
    (g,) = torch.autograd.grad(max_loglik(r, noise="huber", delta=d).loglik, d)
    h = 1e-5
    fd = (max_loglik(r, noise="huber", delta=1.345 + h).loglik
          - max_loglik(r, noise="huber", delta=1.345 - h).loglik) / (2 * h)
    assert g.item() == pytest.approx(fd.item(), rel=1e-4, abs=1e-7)


def test_padding_is_never_read_and_vmap_matches_batch():
    r = _residuals(5)
    mask = torch.ones_like(r, dtype=torch.bool)
    mask[:, 30:] = False
    garbage = torch.where(mask, r, torch.tensor(float("nan"), dtype=F64))
    trimmed = compare_noise(r[:, :30])
    padded = compare_noise(garbage, mask=mask)
    for a, b in zip(trimmed, padded):
        assert torch.equal(a, b) if a.dtype in (torch.bool, torch.long) else torch.allclose(a, b, rtol=1e-13)
    mapped = torch.func.vmap(lambda x, k: compare_noise(x, mask=k))(garbage, mask)
    for a, b in zip(mapped, padded):
        assert torch.equal(a, b) if a.dtype in (torch.bool, torch.long) else torch.allclose(a, b, rtol=1e-13)


def test_degenerate_samples_do_not_poison_the_batch():
    r = _residuals(6)
    r[1] = 0.0                      # a perfect fit: every scale is 0
    mask = torch.ones_like(r, dtype=torch.bool)
    mask[2, 1:] = False             # one point: no scale
    out = compare_noise(r, mask=mask)
    assert out.ok.tolist() == [True, False, False, True]
    assert torch.isnan(out.loglik[1:3]).all() and torch.isnan(out.aic[1:3]).all()
    alone = compare_noise(r[3])
    assert torch.allclose(out.loglik[3], alone.loglik, rtol=1e-13)


def test_aic_and_the_recommendation():
    assert aic(torch.tensor(-10.0), 3).item() == 26.0
    g = torch.Generator().manual_seed(7)
    gauss = lossfn.Gaussian(1.0).sample(4000, generator=g, dtype=F64)
    lap = lossfn.Laplace(1.0).sample(4000, generator=g, dtype=F64)
    out = compare_noise(torch.stack([gauss, lap]), n_params=0)
    assert [LOSS_OF[NOISE_MODELS[i]] for i in out.best.tolist()] == ["mse", "mae"]
    # AIC with k = 1 (the scale) from scipy's own maximized Gaussian log-likelihood.
    mu, sd = stats.norm.fit(gauss.numpy())
    gaussian_column = NOISE_MODELS.index("gaussian")
    assert out.aic[0, gaussian_column].item() == pytest.approx(
        2 * 1 - 2 * stats.norm.logpdf(gauss.numpy(), mu, sd).sum(), rel=1e-12)
    with pytest.raises(ValueError, match="one of"):
        max_loglik(gauss, noise="cauchy")
    with pytest.raises(ValueError, match="give one residual tensor or 3"):
        compare_noise([gauss, lap])
