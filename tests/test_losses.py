"""lossfn.mse / mae / huber against torch's built-ins, and their contract."""

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch.func import grad, hessian, jacrev, vmap

import lossfn

PAIRS = [
    (lossfn.mse, F.mse_loss),
    (lossfn.mae, F.l1_loss),
    (lossfn.huber, F.huber_loss),
]
SHAPES = [(7,), (3, 5), (2, 3, 4), (1,)]


@pytest.mark.parametrize("ours, theirs", PAIRS)
@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_equals_torch_builtin(ours, theirs, shape, dtype, reduction, gen):
    pred = torch.randn(shape, generator=gen, dtype=dtype) * 3
    target = torch.randn(shape, generator=gen, dtype=dtype) * 3
    torch.testing.assert_close(ours(pred, target, reduction=reduction),
                               theirs(pred, target, reduction=reduction))


@pytest.mark.parametrize("delta", [0.1, 1.0, 2.5])
def test_huber_float_delta_equals_torch(delta, gen):
    pred, target = torch.randn(2, 50, generator=gen, dtype=torch.float64) * 3
    torch.testing.assert_close(lossfn.huber(pred, target, delta=delta),
                               F.huber_loss(pred, target, delta=delta))


def test_huber_tensor_delta_keeps_float32_digits_with_offsets():
    # Dividing first would round 1e4/3 and (1e4+0.5)/3 separately and lose ~1e-3.
    pred = torch.tensor([1e4 + 0.5], dtype=torch.float32)
    target = torch.tensor([1e4], dtype=torch.float32)
    value = lossfn.huber(pred, target, delta=torch.tensor(3.0))
    assert value.item() == pytest.approx(0.125, rel=1e-6)


def test_huber_tensor_delta_equals_torch_per_delta(gen):
    pred, target = torch.randn(2, 4, 30, generator=gen, dtype=torch.float64) * 3
    delta = torch.tensor([0.3, 1.0, 1.7, 4.0], dtype=torch.float64)[:, None]
    ours = lossfn.huber(pred, target, delta=delta, reduction="none")
    for i in range(4):
        ref = F.huber_loss(pred[i], target[i], delta=float(delta[i]), reduction="none")
        torch.testing.assert_close(ours[i], ref)


@pytest.mark.parametrize("ours, elementwise", [
    (lossfn.mse, lambda r, d: r**2),
    (lossfn.mae, lambda r, d: np.abs(r)),
    (lossfn.huber, lambda r, d: np.where(np.abs(r) <= d, 0.5 * r**2, d * (np.abs(r) - 0.5 * d))),
])
def test_weighted_mean_is_ratio_of_sums(ours, elementwise, gen):
    pred, target = torch.randn(2, 3, 8, generator=gen, dtype=torch.float64) * 2
    weight = torch.rand(3, 8, generator=gen, dtype=torch.float64)
    kwargs = {"delta": 1.0} if ours is lossfn.huber else {}
    ell = elementwise((pred - target).numpy(), 1.0)
    w = weight.numpy()
    assert ours(pred, target, weight=weight, **kwargs).item() == pytest.approx((w * ell).sum() / w.sum(), rel=1e-13)
    assert ours(pred, target, weight=weight, reduction="sum", **kwargs).item() == pytest.approx((w * ell).sum(), rel=1e-13)
    np.testing.assert_allclose(ours(pred, target, weight=weight, reduction="none", **kwargs).numpy(), w * ell, rtol=1e-13)
    # A weight broadcast over rows is the same as the expanded weight.
    row = weight[0]
    torch.testing.assert_close(ours(pred, target, weight=row, **kwargs),
                               ours(pred, target, weight=row.expand(3, 8), **kwargs))


def test_huber_weighted_mean_differs_from_torchs_mean_of_products(gen):
    # torch's own weighting convention for huber would be mean(w·ℓ); ours is Σwℓ/Σw.
    pred, target = torch.randn(2, 10, generator=gen, dtype=torch.float64)
    weight = torch.full((10,), 2.0, dtype=torch.float64)
    assert lossfn.huber(pred, target, weight=weight).item() == pytest.approx(
        F.huber_loss(pred, target).item(), rel=1e-14)


# --- the source text's numbers, corrected (DESIGN.md) -------------------------------------

def test_source_text_examples():
    pred = torch.tensor([140.0, 210.0, 245.0, 310.0, 360.0])
    target = torch.tensor([150.0, 200.0, 250.0, 300.0, 350.0])
    assert lossfn.mse(pred, target).item() == 85.0
    y_true = torch.tensor([1.0, 2.0, 3.0, 100.0], dtype=torch.float64)
    y_pred = torch.tensor([1.1, 2.2, 2.8, 3.0], dtype=torch.float64)
    assert lossfn.mae(y_pred, y_true).item() == pytest.approx(24.375, abs=1e-12)
    assert lossfn.mae(y_pred, y_true, reduction="sum").item() == pytest.approx(97.5, abs=1e-12)
    np.testing.assert_allclose(lossfn.mae(y_pred, y_true, reduction="none").numpy(),
                               [0.1, 0.2, 0.2, 97.0], atol=1e-12)
    actual = torch.tensor([85.0, 90.0, 88.0, 92.0, 15.0], dtype=torch.float64)
    predicted = torch.tensor([84.0, 89.0, 87.0, 91.0, 87.0], dtype=torch.float64)
    assert lossfn.mse(predicted, actual).item() == pytest.approx(1037.6, abs=1e-9)
    assert lossfn.mae(predicted, actual).item() == pytest.approx(15.2, abs=1e-12)
    a = lossfn.mae(predicted, actual, reduction="none")
    s = lossfn.mse(predicted, actual, reduction="none")
    assert round(100 * (a[4] / a.sum()).item(), 1) == 94.7
    assert round(100 * (s[4] / s.sum()).item(), 2) == 99.92


def test_gradient_magnitudes_72_vs_1():
    error = torch.tensor([72.0])
    zero = torch.zeros(1)
    g_sq = grad(lambda e: lossfn.mse(e, zero, reduction="sum") / 2)(error)
    g_abs = grad(lambda e: lossfn.mae(e, zero, reduction="sum"))(error)
    assert g_sq.item() == 72.0 and g_abs.item() == 1.0


# --- gradient conventions at the kinks ----------------------------------------------------

def test_abs_gradient_is_zero_at_zero():
    x = torch.tensor([-2.0, 0.0, 3.0], dtype=torch.float64)
    g = grad(lambda p: lossfn.mae(p, torch.zeros(3, dtype=torch.float64), reduction="sum"))(x)
    assert g.tolist() == [-1.0, 0.0, 1.0]


@pytest.mark.parametrize("delta", [1.0, torch.tensor(1.0, dtype=torch.float64)])
def test_huber_is_quadratic_at_the_threshold(delta):
    x = torch.tensor([-1.0, 1.0, 0.5, 2.0], dtype=torch.float64)
    target = torch.zeros(4, dtype=torch.float64)
    h = hessian(lambda p: lossfn.huber(p, target, delta=delta, reduction="sum"))(x)
    assert h.diagonal().tolist() == [1.0, 1.0, 1.0, 0.0]
    g = grad(lambda p: lossfn.huber(p, target, delta=delta, reduction="sum"))(x)
    assert g.tolist() == [-1.0, 1.0, 0.5, 1.0]


def test_gradient_with_respect_to_tensor_delta():
    r = torch.tensor([0.5, -3.0, 2.0], dtype=torch.float64)
    target = torch.zeros(3, dtype=torch.float64)
    delta = torch.tensor(1.5, dtype=torch.float64)
    g = grad(lambda d: lossfn.huber(r, target, delta=d, reduction="sum"))(delta)
    # ∂ρ/∂δ = |ε| − δ beyond the threshold, 0 inside it.
    assert g.item() == pytest.approx((3.0 - 1.5) + (2.0 - 1.5), abs=1e-14)


def test_mse_hessian_is_two_over_m():
    x = torch.randn(5, dtype=torch.float64)
    h = hessian(lambda p: lossfn.mse(p, torch.zeros(5, dtype=torch.float64)))(x)
    torch.testing.assert_close(h, torch.eye(5, dtype=torch.float64) * 2 / 5)


# --- composability --------------------------------------------------------------------------

@pytest.mark.parametrize("fn", [lossfn.mse, lossfn.mae, lossfn.huber])
def test_vmap_matches_loop(fn, gen):
    pred, target = torch.randn(2, 6, 9, generator=gen)
    batched = vmap(fn)(pred, target)
    looped = torch.stack([fn(p, t) for p, t in zip(pred, target)])
    torch.testing.assert_close(batched, looped)


def test_vmap_over_delta(gen):
    pred, target = torch.randn(2, 9, generator=gen)
    deltas = torch.tensor([0.2, 0.7, 2.0])
    out = vmap(lambda d: lossfn.huber(pred, target, delta=d))(deltas)
    ref = torch.stack([F.huber_loss(pred, target, delta=float(d)) for d in deltas])
    torch.testing.assert_close(out, ref)


@pytest.mark.parametrize("fn", [lossfn.mse, lossfn.mae, lossfn.huber])
def test_jacrev_equals_autograd(fn, gen):
    pred, target = torch.randn(2, 4, generator=gen, dtype=torch.float64)
    jac = jacrev(lambda p: fn(p, target, reduction="none"))(pred)
    p = pred.clone().requires_grad_()
    ref = torch.stack([torch.autograd.grad(fn(p, target, reduction="none")[i], p)[0] for i in range(4)])
    torch.testing.assert_close(jac, ref)


def test_torch_compile(gen):
    pred, target = torch.randn(2, 16, generator=gen)
    delta = torch.tensor(0.5)
    compiled = torch.compile(lambda p, t, d: lossfn.huber(p, t, delta=d), backend="eager", fullgraph=True)
    torch.testing.assert_close(compiled(pred, target, delta), F.huber_loss(pred, target, delta=0.5))


# --- bad input -------------------------------------------------------------------------------

@pytest.mark.parametrize("fn", [lossfn.mse, lossfn.mae, lossfn.huber, lossfn.gaussian_nll,
                                lossfn.laplace_nll, lossfn.huber_nll])
def test_shape_mismatch_raises_with_hint(fn):
    with pytest.raises(lossfn.ShapeError, match=r"\(4, 1\).*\(4,\).*squeeze\(-1\)"):
        fn(torch.zeros(4, 1), torch.zeros(4))
    with pytest.raises(lossfn.ShapeError, match=fn.__name__):
        fn(torch.zeros(3), torch.zeros(4))
    assert issubclass(lossfn.ShapeError, ValueError)


@pytest.mark.parametrize("fn", [lossfn.mse, lossfn.mae, lossfn.huber, lossfn.gaussian_nll])
def test_bad_reduction_and_dtypes(fn):
    x = torch.zeros(3)
    with pytest.raises(ValueError, match="reduction must be one of"):
        fn(x, x, reduction="avg")
    with pytest.raises(TypeError, match="floating-point"):
        fn(x, torch.zeros(3, dtype=torch.long))
    with pytest.raises(TypeError, match="floating-point"):
        fn(torch.zeros(3, dtype=torch.bool), x)
    with pytest.raises(TypeError, match="complex"):
        fn(torch.zeros(3, dtype=torch.complex64), torch.zeros(3, dtype=torch.complex64))
    with pytest.raises(TypeError, match="torch.Tensor"):
        fn([0.0, 1.0], x[:2])


def test_weight_that_would_enlarge_the_loss_is_refused():
    with pytest.raises(lossfn.ShapeError, match="weight"):
        lossfn.mse(torch.zeros(3), torch.zeros(3), weight=torch.ones(2, 3))


@pytest.mark.parametrize("fn", [lossfn.mse, lossfn.mae, lossfn.huber, lossfn.gaussian_nll,
                                lossfn.laplace_nll, lossfn.huber_nll])
def test_empty_inputs(fn):
    e = torch.zeros(0)
    assert fn(e, e, reduction="sum").item() == 0.0
    assert math.isnan(fn(e, e, reduction="mean").item())
    assert fn(e, e, reduction="none").shape == (0,)


@pytest.mark.parametrize("fn", [lossfn.mse, lossfn.mae, lossfn.huber, lossfn.gaussian_nll,
                                lossfn.laplace_nll, lossfn.huber_nll])
def test_inputs_not_mutated(fn, gen):
    pred, target = torch.randn(2, 5, generator=gen)
    weight = torch.rand(5, generator=gen)
    copies = [pred.clone(), target.clone(), weight.clone()]
    fn(pred, target, weight=weight, reduction="none")
    for a, b in zip([pred, target, weight], copies):
        assert torch.equal(a, b)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("ours, theirs", PAIRS)
def test_half_precision_follows_torch(ours, theirs, dtype, gen):
    pred, target = torch.randn(2, 64, generator=gen).to(dtype)
    out = ours(pred, target)
    assert out.dtype == dtype
    torch.testing.assert_close(out, theirs(pred, target))
