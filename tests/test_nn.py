"""nn criteria: drop-in equality with torch, validation, learned scales."""

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import lossfn


@pytest.mark.parametrize("ours, theirs", [
    (lossfn.nn.MSELoss, torch.nn.MSELoss),
    (lossfn.nn.MAELoss, torch.nn.L1Loss),
    (lossfn.nn.L1Loss, torch.nn.L1Loss),
    (lossfn.nn.HuberLoss, torch.nn.HuberLoss),
])
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_drop_in_for_torch(ours, theirs, reduction, gen):
    p, t = torch.randn(2, 4, 6, generator=gen)
    torch.testing.assert_close(ours(reduction=reduction)(p, t), theirs(reduction=reduction)(p, t))


def test_huber_delta_and_weight(gen):
    p, t = torch.randn(2, 10, generator=gen, dtype=torch.float64)
    crit = lossfn.nn.HuberLoss(delta=0.5)
    torch.testing.assert_close(crit(p, t), F.huber_loss(p, t, delta=0.5))
    w = torch.rand(10, generator=gen, dtype=torch.float64)
    ref = (w * F.huber_loss(p, t, delta=0.5, reduction="none")).sum() / w.sum()
    torch.testing.assert_close(crit(p, t, weight=w), ref)
    assert "delta=0.5" in repr(crit)


def test_validation_at_construction():
    with pytest.raises(ValueError, match="reduction"):
        lossfn.nn.MSELoss(reduction="batchmean")
    for bad in (0.0, -2.0, math.nan):
        with pytest.raises(ValueError, match="delta"):
            lossfn.nn.HuberLoss(delta=bad)
        with pytest.raises(ValueError, match="scale"):
            lossfn.nn.GaussianNLLLoss(scale=bad)
    with pytest.raises(TypeError):
        lossfn.nn.LaplaceNLLLoss(scale="big")


def test_nll_criteria_equal_distributions(gen):
    p, t = torch.randn(2, 20, generator=gen, dtype=torch.float64)
    s = torch.rand(20, generator=gen, dtype=torch.float64) + 0.5
    ref = -torch.distributions.Normal(p, s).log_prob(t).mean()
    torch.testing.assert_close(lossfn.nn.GaussianNLLLoss()(p, t, scale=s), ref)
    ref = -torch.distributions.Laplace(p, 0.4).log_prob(t).sum()
    torch.testing.assert_close(lossfn.nn.LaplaceNLLLoss(scale=0.4, reduction="sum")(p, t), ref)


def test_scale_errors_are_explained():
    x = torch.zeros(3)
    with pytest.raises(ValueError, match="no scale"):
        lossfn.nn.GaussianNLLLoss()(x, x)
    with pytest.raises(ValueError, match="learn_scale"):
        lossfn.nn.HuberNLLLoss(learn_scale=True)(x, x, scale=1.0)


def _minimize(modules, objective, steps=5):
    """Minimize ``objective()`` over the parameters of ``modules`` to near machine precision."""
    params = [p for m in modules for p in m.parameters()]
    opt = torch.optim.LBFGS(params, lr=1, max_iter=500, tolerance_grad=1e-14,
                            tolerance_change=1e-16, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        loss = objective()
        loss.backward()
        return loss

    for _ in range(steps):
        opt.step(closure)


def test_learned_laplace_scale_converges_to_mean_absolute_residual():
    gen = torch.Generator().manual_seed(2)
    r = lossfn.Laplace(0.7).sample(400, generator=gen, dtype=torch.float64)
    crit = lossfn.nn.LaplaceNLLLoss(learn_scale=True).double()
    _minimize([crit], lambda: crit(torch.zeros_like(r), r))
    assert crit.log_scale.exp().item() == pytest.approx(r.abs().mean().item(), rel=1e-9)


@pytest.mark.parametrize("criterion, mle", [
    (lossfn.nn.GaussianNLLLoss, lambda r: math.sqrt(np.mean(r**2))),
])
def test_learned_scale_converges_to_the_mle(criterion, mle):
    gen = torch.Generator().manual_seed(0)
    x = torch.rand(200, 1, generator=gen, dtype=torch.float64)
    y = 1 + 2 * x[:, 0] + 0.3 * torch.randn(200, generator=gen, dtype=torch.float64)
    model = torch.nn.Linear(1, 1).double()
    crit = criterion(learn_scale=True).double()
    assert [n for n, _ in crit.named_parameters()] == ["log_scale"]
    _minimize([model, crit], lambda: crit(model(x)[:, 0], y))
    r = (y - model(x)[:, 0]).detach().numpy()
    assert crit.log_scale.exp().item() == pytest.approx(mle(r), rel=1e-5)
    if criterion is lossfn.nn.GaussianNLLLoss:
        # and the line is the OLS line
        X = np.column_stack([np.ones(200), x[:, 0].numpy()])
        beta = np.linalg.lstsq(X, y.numpy(), rcond=None)[0]
        assert model.bias.item() == pytest.approx(beta[0], rel=1e-6)
        assert model.weight.item() == pytest.approx(beta[1], rel=1e-6)


def test_huber_nll_learned_scale_gradient_vanishes_at_optimum():
    # At the optimum of log s, d/ds [mean ρ_δ(r/s) + log s] = 0, i.e. mean ψ(r/s)·r/s = 1.
    gen = torch.Generator().manual_seed(1)
    r = torch.randn(300, generator=gen, dtype=torch.float64) * 2
    crit = lossfn.nn.HuberNLLLoss(delta=1.345, learn_scale=True).double()
    _minimize([crit], lambda: crit(torch.zeros_like(r), r))
    s = crit.log_scale.exp().item()
    u = r.numpy() / s
    assert np.mean(np.clip(u, -1.345, 1.345) * u) == pytest.approx(1.0, abs=1e-8)


def test_repr():
    assert repr(lossfn.nn.GaussianNLLLoss(scale=2.0)) == "GaussianNLLLoss(scale=2.0, reduction='mean')"
    assert "learn_scale=True" in repr(lossfn.nn.LaplaceNLLLoss(learn_scale=True))
