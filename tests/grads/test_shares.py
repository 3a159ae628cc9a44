"""shares: the source text's outlier analysis, with exact fractions as the oracle."""

import math
from fractions import Fraction

import pytest
import torch
from torch.func import vmap

import lossfn

PRED = [84.0, 89.0, 87.0, 91.0, 87.0]
TARGET = [85.0, 90.0, 88.0, 92.0, 15.0]


def exact(values):
    total = sum(values)
    return [float(Fraction(v) / total) for v in values]


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_outlier_demo(dtype):
    pred, target = torch.tensor(PRED, dtype=dtype), torch.tensor(TARGET, dtype=dtype)
    residual = [int(p - t) for p, t in zip(PRED, TARGET)]
    tol = dict(rtol=2 * torch.finfo(dtype).eps, atol=0)
    mae = lossfn.shares(pred, target, loss="mae")
    mse = lossfn.shares(pred, target, loss="mse")
    torch.testing.assert_close(mae.loss, torch.tensor(exact([abs(r) for r in residual]), dtype=dtype), **tol)
    torch.testing.assert_close(mse.loss, torch.tensor(exact([r * r for r in residual]), dtype=dtype), **tol)
    torch.testing.assert_close(mse.grad, mae.loss, **tol)  # |2ε| shares = |ε| shares
    torch.testing.assert_close(mae.grad, torch.full((5,), 0.2, dtype=dtype), **tol)
    # The corrected numbers (the source text prints ~97.3% and ~99.9%).
    assert round(mae.loss[4].item() * 100, 1) == 94.7
    assert round(mse.loss[4].item() * 100, 2) == 99.92
    assert bool(mae.ok) and bool(mse.ok)


def test_huber_against_formula():
    pred, target = torch.tensor(PRED, dtype=torch.float64), torch.tensor(TARGET, dtype=torch.float64)
    got = lossfn.shares(pred, target, loss="huber", delta=2.0)
    # |ε| = 1 (four times, quadratic: ½) and 72 (linear: 2·(72 − 1) = 142); ψ = 1 and 2.
    torch.testing.assert_close(got.loss, torch.tensor(exact([Fraction(1, 2)] * 4 + [142]), dtype=torch.float64))
    torch.testing.assert_close(got.grad, torch.tensor([1 / 6] * 4 + [2 / 6], dtype=torch.float64))


def test_batch_mask_and_degenerate_rows():
    pred = torch.tensor([PRED, [1.0, 2.0, 3.0, 4.0, 5.0], PRED])
    target = torch.tensor([TARGET, [1.0, 2.0, 3.0, 4.0, 5.0], TARGET])
    target[2, 3] = math.nan  # masked out below: must not leak
    mask = torch.tensor([[True] * 5, [True] * 5, [True, True, True, False, True]])
    got = lossfn.shares(pred, target, loss="mse", mask=mask)
    assert got.ok.tolist() == [True, False, True]
    assert torch.isnan(got.loss[1]).all() and torch.isnan(got.grad[1]).all()
    want_masked = exact([1, 1, 1, 0, 72 * 72])
    torch.testing.assert_close(got.loss[2], torch.tensor(want_masked))
    torch.testing.assert_close(got.loss[0], lossfn.shares(pred[0], target[0]).loss)
    unmasked = lossfn.shares(pred, target)
    assert unmasked.ok.tolist() == [True, False, False]  # the nan makes row 2 not ok


def test_vmap_matches_batched():
    g = torch.Generator().manual_seed(0)
    pred, target = torch.randn(4, 7, generator=g), torch.randn(4, 7, generator=g)
    batched = lossfn.shares(pred, target, loss="huber", delta=0.5)
    mapped = vmap(lambda p, t: lossfn.shares(p, t, loss="huber", delta=0.5))(pred, target)
    for a, b in zip(mapped, batched):
        torch.testing.assert_close(a, b)
    torch.testing.assert_close(batched.loss.sum(-1), torch.ones(4))


def test_bad_arguments():
    x = torch.zeros(3)
    with pytest.raises(ValueError, match="loss must be one of"):
        lossfn.shares(x, x, loss="rmse")
    with pytest.raises(lossfn.ShapeError):
        lossfn.shares(x, torch.zeros(4))
    with pytest.raises(TypeError, match="mask"):
        lossfn.shares(x, x, mask=torch.ones(3))
    with pytest.raises(ValueError, match="scalar"):
        lossfn.shares(torch.tensor(1.0), torch.tensor(2.0))


def test_masked_nan_does_not_reach_the_gradient():
    pred = torch.tensor([[1.0, 2.0, float("nan")], [0.5, float("inf"), 3.0]], requires_grad=True)
    target = torch.zeros(2, 3)
    mask = torch.isfinite(pred.detach())
    for loss in ("mse", "mae", "huber"):
        out = lossfn.shares(pred, target, loss=loss, mask=mask)
        (g,) = torch.autograd.grad(out.loss.nansum() + out.grad.nansum(), pred)
        assert torch.isfinite(g).all(), loss
        assert (g[~mask] == 0).all()
