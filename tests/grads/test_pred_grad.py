"""pred_grad against autograd of torch's own losses, at and away from the kinks."""

import pytest
import torch
import torch.nn.functional as F
from torch.func import jacrev, vmap

import lossfn
from lossfn import ShapeError

TORCH_LOSS = {
    "mse": lambda p, t, r: F.mse_loss(p, t, reduction=r),
    "mae": lambda p, t, r: F.l1_loss(p, t, reduction=r),
    "huber": lambda p, t, r: F.huber_loss(p, t, reduction=r, delta=0.5),
}


def autograd(loss, pred, target, reduction):
    p = pred.clone().requires_grad_(True)
    value = TORCH_LOSS[loss](p, target, reduction)
    (g,) = torch.autograd.grad(value.sum(), p)
    return g


def points(dtype):
    target = torch.tensor([[1.0, -2.0, 0.25, 3.0], [0.0, 7.0, -1.0, 2.0]], dtype=dtype)
    # residuals: generic values, exactly 0 (mae's kink) and exactly ±δ = ±0.5 (huber's joins)
    residual = torch.tensor([[0.3, -4.0, 0.0, 0.5], [-0.5, 0.0, 12.0, -0.01]], dtype=dtype)
    return target + residual, target


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("loss", ["mse", "mae", "huber"])
def test_equals_autograd_at_and_away_from_kinks(loss, reduction, dtype):
    pred, target = points(dtype)
    kinks = (pred - target)[[0, 0, 1, 1], [2, 3, 0, 1]]
    assert kinks.tolist() == [0.0, 0.5, -0.5, 0.0]  # the kinks are hit exactly
    got = lossfn.pred_grad(pred, target, loss=loss, delta=0.5, reduction=reduction)
    torch.testing.assert_close(got, autograd(loss, pred, target, reduction), rtol=0, atol=1e-7)
    assert got.dtype == dtype and got.shape == pred.shape


def test_kink_values_exactly():
    pred = torch.tensor([2.0, 3.0, 1.5, 0.5])
    target = torch.tensor([2.0, 1.0, 1.0, 1.0])
    assert lossfn.pred_grad(pred, target, loss="mae", reduction="sum").tolist() == [0.0, 1.0, 1.0, -1.0]
    assert lossfn.pred_grad(pred, target, loss="huber", delta=0.5,
                            reduction="sum").tolist() == [0.0, 0.5, 0.5, -0.5]


def test_weighted_mean_against_formula():
    g = torch.Generator().manual_seed(0)
    pred, target = torch.randn(6, generator=g), torch.randn(6, generator=g)
    w = torch.rand(6, generator=g) + 0.1
    p = pred.clone().requires_grad_(True)
    value = (w * (p - target).abs()).sum() / w.sum()
    (want,) = torch.autograd.grad(value, p)
    torch.testing.assert_close(lossfn.pred_grad(pred, target, loss="mae", weight=w), want)


def test_tensor_delta_and_vmap_match_batched():
    g = torch.Generator().manual_seed(1)
    pred, target = torch.randn(3, 5, generator=g), torch.randn(3, 5, generator=g)
    delta = torch.tensor([[0.1], [0.5], [2.0]])
    batched = lossfn.pred_grad(pred, target, loss="huber", delta=delta, reduction="sum")
    one = vmap(lambda p, t, d: lossfn.pred_grad(p, t, loss="huber", delta=d, reduction="sum"))
    torch.testing.assert_close(one(pred, target, delta), batched)
    for i, d in enumerate([0.1, 0.5, 2.0]):
        torch.testing.assert_close(batched[i], autograd_huber(pred[i], target[i], d))


def autograd_huber(pred, target, delta):
    p = pred.clone().requires_grad_(True)
    (g,) = torch.autograd.grad(F.huber_loss(p, target, delta=delta, reduction="sum"), p)
    return g


def test_jacobian_is_the_hessian_of_mse():
    pred, target = torch.randn(4, dtype=torch.float64), torch.randn(4, dtype=torch.float64)
    jac = jacrev(lambda p: lossfn.pred_grad(p, target))(pred)
    torch.testing.assert_close(jac, torch.eye(4, dtype=torch.float64) * 2 / 4)


def test_bad_arguments():
    x = torch.zeros(3)
    with pytest.raises(ValueError, match="loss must be one of"):
        lossfn.pred_grad(x, x, loss="l2")
    with pytest.raises(ShapeError, match="squeeze"):
        lossfn.pred_grad(torch.zeros(3, 1), x)
    with pytest.raises(ValueError, match="reduction"):
        lossfn.pred_grad(x, x, reduction="avg")
    with pytest.raises(ShapeError, match="delta"):
        lossfn.pred_grad(x, x, loss="huber", delta=torch.ones(2, 3))


@pytest.mark.parametrize("delta", [0.0, -1.0, torch.tensor(-1.0)])
def test_delta_outside_its_domain_gives_nan_like_huber(delta):
    pred, target = torch.tensor([0.5, -2.0]), torch.zeros(2)
    assert torch.isnan(lossfn.pred_grad(pred, target, loss="huber", delta=delta)).all()
    assert torch.isnan(lossfn.huber(pred, target, delta=delta))


def test_parameter_type_errors_name_the_function_and_argument():
    with pytest.raises(TypeError, match=r"gaussian_nll: scale must be a float or a tensor"):
        lossfn.gaussian_nll(torch.zeros(2), torch.zeros(2), scale="a")
    with pytest.raises(TypeError, match=r"huber: delta must be a real number"):
        lossfn.huber(torch.zeros(2), torch.zeros(2), delta=torch.tensor([1j]))
