"""Exact NLLs against torch.distributions and numerical integration."""

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import integrate
from torch.func import grad, hessian, vmap

import lossfn
from lossfn.nll import huber_log_normalizer


@pytest.mark.parametrize("dtype, tol", [(torch.float32, 1e-6), (torch.float64, 1e-12)])
@pytest.mark.parametrize("scale", [0.3, 1.0, 7.5, "tensor"])
def test_gaussian_nll_equals_normal_log_prob(dtype, tol, scale, gen):
    pred = torch.randn(4, 25, generator=gen, dtype=dtype)
    target = pred + torch.randn(4, 25, generator=gen, dtype=dtype) * 2
    if scale == "tensor":
        scale = torch.rand(4, 1, generator=gen, dtype=dtype) + 0.2
    ref = -torch.distributions.Normal(pred, scale).log_prob(target)
    ours = lossfn.gaussian_nll(pred, target, scale=scale, reduction="none")
    torch.testing.assert_close(ours, ref, rtol=tol, atol=tol)
    torch.testing.assert_close(lossfn.gaussian_nll(pred, target, scale=scale), ref.mean(), rtol=tol, atol=tol)
    torch.testing.assert_close(lossfn.gaussian_nll(pred, target, scale=scale, reduction="sum"),
                               ref.sum(), rtol=tol, atol=tol * ref.numel())


@pytest.mark.parametrize("dtype, tol", [(torch.float32, 1e-6), (torch.float64, 1e-12)])
@pytest.mark.parametrize("scale", [0.3, 1.0, 7.5, "tensor"])
def test_laplace_nll_equals_laplace_log_prob(dtype, tol, scale, gen):
    pred = torch.randn(4, 25, generator=gen, dtype=dtype)
    target = pred + torch.randn(4, 25, generator=gen, dtype=dtype) * 2
    if scale == "tensor":
        scale = torch.rand(25, generator=gen, dtype=dtype) + 0.2  # heteroscedastic
    ref = -torch.distributions.Laplace(pred, scale).log_prob(target)
    torch.testing.assert_close(lossfn.laplace_nll(pred, target, scale=scale, reduction="none"),
                               ref, rtol=tol, atol=tol)
    torch.testing.assert_close(lossfn.laplace_nll(pred, target, scale=scale, reduction="sum"),
                               ref.sum(), rtol=tol, atol=tol * ref.numel())


def _huber_density(u, delta):
    rho = 0.5 * u * u if abs(u) <= delta else delta * (abs(u) - 0.5 * delta)
    return math.exp(-rho)


@pytest.mark.parametrize("delta", [0.1, 0.5, 1.0, 1.345, 3.0])
def test_huber_normalizer_by_quadrature(delta):
    centre = integrate.quad(_huber_density, -delta, delta, args=(delta,), epsabs=0, epsrel=1e-13)[0]
    tail = integrate.quad(_huber_density, delta, np.inf, args=(delta,), epsabs=0, epsrel=1e-13)[0]
    assert huber_log_normalizer(delta) == pytest.approx(math.log(centre + 2 * tail), rel=1e-11)
    t = torch.tensor(delta, dtype=torch.float64)
    assert huber_log_normalizer(t).item() == pytest.approx(math.log(centre + 2 * tail), rel=1e-11)


@pytest.mark.parametrize("delta, scale", [(1.345, 1.0), (0.5, 2.0), (2.0, 0.3)])
def test_huber_density_integrates_to_one(delta, scale):
    def density(e):
        t = torch.tensor([e], dtype=torch.float64)
        return math.exp(-lossfn.huber_nll(torch.zeros(1, dtype=torch.float64), t,
                                          delta=delta, scale=scale).item())
    c = delta * scale
    total = sum(integrate.quad(density, a, b, epsabs=1e-13, epsrel=1e-12)[0]
                for a, b in [(-np.inf, -c), (-c, c), (c, np.inf)])
    assert total == pytest.approx(1.0, abs=1e-9)


def test_huber_nll_float_and_tensor_paths_agree(gen):
    pred, target = torch.randn(2, 40, generator=gen, dtype=torch.float64) * 3
    fast = lossfn.huber_nll(pred, target, delta=1.2, scale=0.7, reduction="none")
    slow = lossfn.huber_nll(pred, target, delta=torch.tensor(1.2, dtype=torch.float64),
                            scale=torch.tensor(0.7, dtype=torch.float64), reduction="none")
    torch.testing.assert_close(fast, slow, rtol=1e-13, atol=1e-13)
    # Independent formula, written out here in numpy.
    u = np.abs((target - pred).numpy()) / 0.7
    rho = np.where(u <= 1.2, 0.5 * u**2, 1.2 * (u - 0.6))
    np.testing.assert_allclose(fast.numpy(), rho + math.log(0.7) + huber_log_normalizer(1.2), rtol=1e-13)


@settings(max_examples=40, deadline=None)
@given(
    shift=st.floats(-50, 50),
    scale=st.floats(0.05, 20),
    delta=st.floats(0.05, 5),
)
def test_nll_minus_scaled_loss_is_constant_in_pred(shift, scale, delta):
    gen = torch.Generator().manual_seed(7)
    target = torch.randn(30, generator=gen, dtype=torch.float64) * 4
    preds = [torch.randn(30, generator=gen, dtype=torch.float64) * 4 + shift for _ in range(3)]
    def diffs(nll, loss, factor, **kw):
        return [(nll(p, target, scale=scale, reduction="sum", **kw)
                 - factor * loss(p, target, reduction="sum")).item() for p in preds]
    for values in (
        diffs(lossfn.gaussian_nll, lossfn.mse, 0.5 / scale**2),
        diffs(lossfn.laplace_nll, lossfn.mae, 1 / scale),
    ):
        assert max(values) - min(values) == pytest.approx(0, abs=1e-8 * (1 + abs(values[0])))
    hub = [(lossfn.huber_nll(p, target, delta=delta, scale=scale, reduction="sum")
            - lossfn.huber(p, target, delta=delta * scale, reduction="sum") / scale**2).item() for p in preds]
    assert max(hub) - min(hub) == pytest.approx(0, abs=1e-8 * (1 + abs(hub[0])))


@settings(max_examples=30, deadline=None)
@given(shift=st.floats(-1e3, 1e3))
def test_shift_invariance(shift):
    gen = torch.Generator().manual_seed(3)
    pred, target = torch.randn(2, 20, generator=gen, dtype=torch.float64)
    for fn in (lossfn.mse, lossfn.mae, lossfn.huber, lossfn.gaussian_nll, lossfn.laplace_nll, lossfn.huber_nll):
        a = fn(pred, target)
        b = fn(pred + shift, target + shift)
        assert b.item() == pytest.approx(a.item(), rel=1e-9, abs=1e-9)


def test_outside_the_domain_gives_nan_or_inf_not_an_exception():
    x, y = torch.zeros(3), torch.ones(3)
    for s in (0.0, -1.0, torch.tensor(0.0), torch.tensor(-1.0)):
        for fn in (lossfn.gaussian_nll, lossfn.laplace_nll, lossfn.huber_nll):
            v = fn(x, y, scale=s)
            assert not torch.isfinite(v), (fn.__name__, s)
    for d in (0.0, -1.0, torch.tensor(-1.0)):
        assert torch.isnan(lossfn.huber_nll(x, y, delta=d))
        assert torch.isnan(lossfn.huber(x, y, delta=d))


def test_vmap_over_scale_where_torchs_gaussian_nll_loss_breaks(gen):
    pred, target = torch.randn(2, 10, generator=gen, dtype=torch.float64)
    scales = torch.tensor([0.5, 1.0, 3.0], dtype=torch.float64)
    out = vmap(lambda s: lossfn.gaussian_nll(pred, target, scale=s))(scales)
    ref = torch.stack([-torch.distributions.Normal(pred, s).log_prob(target).mean() for s in scales])
    torch.testing.assert_close(out, ref)
    with pytest.raises(Exception):
        vmap(lambda v: torch.nn.functional.gaussian_nll_loss(pred, target, v, full=True))(scales**2)


def test_vmap_over_delta_and_scale_in_huber_nll(gen):
    pred, target = torch.randn(2, 10, generator=gen, dtype=torch.float64)
    deltas = torch.tensor([0.5, 1.345, 2.0], dtype=torch.float64)
    scales = torch.tensor([0.5, 1.0, 3.0], dtype=torch.float64)
    out = vmap(lambda d, s: lossfn.huber_nll(pred, target, delta=d, scale=s))(deltas, scales)
    ref = torch.stack([lossfn.huber_nll(pred, target, delta=float(d), scale=float(s)) for d, s in zip(deltas, scales)])
    torch.testing.assert_close(out, ref)


def test_gradient_wrt_scale_vanishes_at_the_mle(gen):
    pred, target = torch.randn(2, 200, generator=gen, dtype=torch.float64)
    r = (target - pred).numpy()
    sigma = math.sqrt(np.mean(r**2))
    b = np.mean(np.abs(r))
    g = grad(lambda s: lossfn.gaussian_nll(pred, target, scale=s))(torch.tensor(sigma, dtype=torch.float64))
    assert abs(g.item()) < 1e-12
    g = grad(lambda s: lossfn.laplace_nll(pred, target, scale=s))(torch.tensor(b, dtype=torch.float64))
    assert abs(g.item()) < 1e-12


def test_hessian_of_gaussian_nll_in_pred(gen):
    pred, target = torch.randn(2, 4, generator=gen, dtype=torch.float64)
    h = hessian(lambda p: lossfn.gaussian_nll(p, target, scale=torch.tensor(2.0, dtype=torch.float64), reduction="sum"))(pred)
    torch.testing.assert_close(h, torch.eye(4, dtype=torch.float64) / 4)


def test_weighted_nll(gen):
    pred, target = torch.randn(2, 12, generator=gen, dtype=torch.float64)
    w = torch.rand(12, generator=gen, dtype=torch.float64)
    ref = -torch.distributions.Laplace(pred, 0.8).log_prob(target)
    assert lossfn.laplace_nll(pred, target, scale=0.8, weight=w).item() == pytest.approx(
        ((w * ref).sum() / w.sum()).item(), rel=1e-13)
