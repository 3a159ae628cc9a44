"""fit.ols against certified NIST values, statsmodels, scipy and exact float64 refits."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
import scipy.stats
import statsmodels.api as sm
import torch

import lossfn
from lossfn import fit
from nist_reference import REGRESSION, lre, regression
from routes import route  # noqa: F401 (an autouse fixture: every test on both routes)

# Minimum LRE over the coefficients (issue 3); standard errors >= 7 except Filip.
COEF_GATE = {
    "Norris": 12, "Pontius": 11, "NoInt1": 14, "NoInt2": 14, "Longley": 10.5,
    "Wampler1": 7.5, "Wampler2": 7.5, "Wampler3": 7.5, "Wampler4": 7.5,
    "Wampler5": 5.5, "Filip": 7,
}


def _coefficients(res: fit.OLSFit, intercept: bool) -> np.ndarray:
    slope = np.atleast_1d(res.slope.numpy())
    return np.concatenate([[res.intercept.item()], slope]) if intercept else slope


@pytest.mark.parametrize("name", REGRESSION)
def test_nist_certified_values(name):
    data = regression(name)
    res = fit.ols(torch.tensor(data.x), torch.tensor(data.y), intercept=data.intercept)
    meta = data.meta
    assert res.ok.item()
    assert res.n.item() == meta["n"]
    assert lre(_coefficients(res, data.intercept), meta["estimate"]) >= COEF_GATE[name]
    if name != "Filip":
        assert lre(res.stderr.numpy(), meta["std_error"]) >= 7
    dof = meta["anova"]["residual"]["df"]
    residual_sd = math.sqrt(res.sigma2.item() * meta["n"] / dof)
    assert lre(residual_sd, meta["residual_sd"]) >= 7
    assert lre(res.r2.item(), meta["r_squared"]) >= 7  # uncentred for NoInt1/2


def test_nist_wampler_as_one_batch():
    """Wampler1-5 share their design: one batched call meets every gate."""
    sets = [regression(f"Wampler{k}") for k in range(1, 6)]
    x = torch.tensor(sets[0].x).unsqueeze(0)  # (1, m, d) broadcasts against y (5, m)
    y = torch.tensor(np.stack([s.y for s in sets]))
    res = fit.ols(x, y)
    for k, s in enumerate(sets):
        coef = np.concatenate([[res.intercept[k].item()], res.slope[k].numpy()])
        assert lre(coef, s.meta["estimate"]) >= COEF_GATE[f"Wampler{k + 1}"]


def test_nist_padded_with_garbage():
    """Norris padded with nan and 1e30 behind a mask keeps its certified digits."""
    data = regression("Norris")
    m = len(data.y)
    x = torch.full((2, m + 9), math.nan, dtype=torch.float64)
    y = torch.full((2, m + 9), 1e30, dtype=torch.float64)
    x[:, :m], y[:, :m] = torch.tensor(data.x), torch.tensor(data.y)
    mask = torch.arange(m + 9) < m
    res = fit.ols(x, y, mask=mask)
    assert res.ok.all()
    for k in range(2):
        coef = [res.intercept[k].item(), res.slope[k].item()]
        assert lre(coef, data.meta["estimate"]) >= COEF_GATE["Norris"]


def _random_batch(gen, batch, m, d, dtype=torch.float64):
    x = torch.randn(batch, m, d, generator=gen, dtype=dtype) * 3 + 5
    beta = torch.randn(batch, d, generator=gen, dtype=dtype)
    noise = torch.randn(batch, m, generator=gen, dtype=dtype)
    return x, (x @ beta.unsqueeze(-1)).squeeze(-1) + 2 + noise


@pytest.mark.parametrize("intercept", [True, False])
@pytest.mark.parametrize("d", [1, 4])
def test_against_statsmodels(intercept, d):
    gen = torch.Generator().manual_seed(d)
    x, y = _random_batch(gen, 6, 25, d)
    res = fit.ols(x, y, intercept=intercept)
    for k in range(x.shape[0]):
        design = x[k].numpy()
        design = sm.add_constant(design, prepend=True) if intercept else design
        ref = sm.OLS(y[k].numpy(), design).fit()
        ours = _coefficients(fit.OLSFit(*(f[k] for f in res)), intercept)
        np.testing.assert_allclose(ours, ref.params, rtol=1e-10, atol=1e-12)
        np.testing.assert_allclose(res.stderr[k].numpy(), ref.bse, rtol=1e-10)
        np.testing.assert_allclose(res.sigma2[k].item() * 25, ref.ssr, rtol=1e-10)
        np.testing.assert_allclose(res.r2[k].item(), ref.rsquared, rtol=1e-10)
    assert res.ok.all()


def test_simple_against_scipy_linregress():
    gen = torch.Generator().manual_seed(1)
    x = torch.rand(8, 40, generator=gen, dtype=torch.float64) * 10 - 3
    y = 0.5 - 1.5 * x + torch.randn(8, 40, generator=gen, dtype=torch.float64)
    res = fit.ols(x, y)
    for k in range(8):
        ref = scipy.stats.linregress(x[k].numpy(), y[k].numpy())
        assert res.slope[k].item() == pytest.approx(ref.slope, rel=1e-12)
        assert res.intercept[k].item() == pytest.approx(ref.intercept, rel=1e-12)
        assert math.copysign(math.sqrt(res.r2[k].item()), res.slope[k].item()) == pytest.approx(
            ref.rvalue, rel=1e-12)
        assert res.stderr[k, 1].item() == pytest.approx(ref.stderr, rel=1e-10)
        assert res.stderr[k, 0].item() == pytest.approx(ref.intercept_stderr, rel=1e-10)


def test_one_predictor_both_paths_agree():
    """x (..., m) and x (..., m, 1) take different code paths and must agree."""
    gen = torch.Generator().manual_seed(2)
    x, y = _random_batch(gen, 5, 30, 1)
    a, b = fit.ols(x.squeeze(-1), y), fit.ols(x, y)
    torch.testing.assert_close(a.slope, b.slope.squeeze(-1), rtol=1e-12, atol=0)
    for field in ("intercept", "sigma2", "stderr", "r2", "n", "ok"):
        torch.testing.assert_close(getattr(a, field), getattr(b, field), rtol=1e-11, atol=0)


@pytest.mark.parametrize("d", [None, 3])
def test_padded_equals_trimmed(d):
    gen = torch.Generator().manual_seed(3)
    lengths = [7, 30, 12, 19]
    m = max(lengths)
    x, y = _random_batch(gen, len(lengths), m, d or 1)
    x = x.squeeze(-1) if d is None else x
    mask = torch.arange(m) < torch.tensor(lengths).unsqueeze(-1)
    # Garbage in the absent slots must not matter.
    rows = mask if d is None else mask.unsqueeze(-1)
    x_bad = torch.where(rows, x, torch.tensor([math.nan, 1e30])[torch.arange(x.numel()) % 2].view_as(x))
    y_bad = torch.where(mask, y, 1e30)
    res = fit.ols(x_bad, y_bad, mask=mask)
    for k, length in enumerate(lengths):
        alone = fit.ols(x[k, :length], y[k, :length])
        for field, value in zip(res._fields, res):
            torch.testing.assert_close(value[k], getattr(alone, field), rtol=1e-12, atol=1e-13,
                                       msg=field)


def test_inputs_are_not_mutated():
    gen = torch.Generator().manual_seed(4)
    x, y = _random_batch(gen, 3, 10, 2)
    mask = torch.ones(3, 10, dtype=torch.bool)
    copies = x.clone(), y.clone(), mask.clone()
    fit.ols(x, y, mask=mask)
    for a, b in zip((x, y, mask), copies):
        assert torch.equal(a, b)


def test_degenerate_datasets_in_a_batch():
    gen = torch.Generator().manual_seed(5)
    x, y = _random_batch(gen, 7, 12, 3)
    mask = torch.ones(7, 12, dtype=torch.bool)
    x[1, :, 2] = 4.2  # constant column
    x[2, :, 2] = 2 * x[2, :, 0] - x[2, :, 1]  # collinear columns
    x[3, :, 1] = x[3, :, 0]  # duplicated column
    mask[4, 3:] = False  # 3 points, 4 parameters
    mask[5] = False  # no points
    y[6, 5] = math.nan  # nan in a present point
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        res = fit.ols(x, y, mask=mask)
    assert res.ok.tolist() == [True, False, False, False, False, False, False]
    for field in ("intercept", "slope", "sigma2", "stderr", "r2"):
        assert torch.isnan(getattr(res, field)[1:]).all(), field
    assert res.n.tolist() == [12, 12, 12, 12, 3, 0, 12]
    ref = sm.OLS(y[0].numpy(), sm.add_constant(x[0].numpy())).fit()
    np.testing.assert_allclose(_coefficients(fit.OLSFit(*(f[0] for f in res)), True), ref.params,
                               rtol=1e-10)


def test_degenerate_simple_regression():
    x = torch.tensor([[0.1, 0.1, 0.1, 0.1], [1.0, 2.0, 3.0, 4.0], [1.0, 2.0, 3.0, 4.0],
                      [5.0, 7.0, 9.0, 9.0]], dtype=torch.float64)
    y = torch.tensor([[1.0, 2.0, 3.0, 4.0], [1.0, 3.0, math.inf, 4.0], [2.0, 4.0, 6.0, 8.0],
                      [1.0, 2.0, 3.0, 4.0]], dtype=torch.float64)
    mask = torch.tensor([[True] * 4, [True] * 4, [True] * 4, [True, False, False, False]])
    res = fit.ols(x, y, mask=mask)
    assert res.ok.tolist() == [False, False, True, False]
    assert res.slope[2].item() == pytest.approx(2.0) and res.intercept[2].item() == pytest.approx(0.0)
    assert torch.isnan(res.slope[[0, 1, 3]]).all()


def test_two_points_exact_line_has_nan_stderr():
    """n = p: the line is exact, sigma2 = 0, and no degrees of freedom are left."""
    res = fit.ols(torch.tensor([1.0, 3.0]), torch.tensor([2.0, 6.0]))
    assert res.ok.item() and res.slope.item() == 2.0 and res.sigma2.item() == 0.0
    assert torch.isnan(res.stderr).all()


@pytest.mark.parametrize("shape", ["simple", "multiple", "origin", "multiple-origin"])
def test_vmap_equals_batched(shape):
    gen = torch.Generator().manual_seed(6)
    x, y = _random_batch(gen, 4, 15, 2)
    x = x if shape.startswith("multiple") else x[..., 0]
    mask = torch.rand(4, 15, generator=gen) < 0.8
    intercept = not shape.endswith("origin")
    batched = fit.ols(x, y, mask=mask, intercept=intercept)
    mapped = torch.func.vmap(lambda a, b, c: fit.ols(a, b, mask=c, intercept=intercept))(x, y, mask)
    for field, a, b in zip(batched._fields, batched, mapped):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-14, msg=field)


@pytest.mark.parametrize("m", [100, 5000])
def test_float32_large_offset(m):
    """x ≈ 1e4 + U(0, 1) in float32: the slope matches the float64 fit of the same data."""
    gen = torch.Generator().manual_seed(7)
    x = 1e4 + torch.rand(3, m, generator=gen)
    y = 3 - 2 * (x - 1e4) + 0.1 * torch.randn(3, m, generator=gen)
    x, y = x.float(), y.float()
    res = fit.ols(x, y)
    for k in range(3):
        exact = scipy.stats.linregress(x[k].double().numpy(), y[k].double().numpy())
        assert res.slope[k].item() == pytest.approx(exact.slope, rel=1e-3)
    # The naive formula from raw sums of squares is not even close here.
    xs, ys = x.double().sum(-1).float(), y.double().sum(-1).float()
    naive = (m * (x * y).sum(-1) - xs * ys) / (m * (x * x).sum(-1) - xs * xs)
    assert not torch.allclose(naive.double(), res.slope.double(), rtol=1e-1)


def test_float32_multiple_regression_with_offsets():
    gen = torch.Generator().manual_seed(8)
    x = torch.rand(4, 200, 3, generator=gen, dtype=torch.float64) + torch.tensor([1e3, -50.0, 7.0])
    y = x @ torch.tensor([1.5, -2.0, 0.5], dtype=torch.float64) + 0.05 * torch.randn(
        4, 200, generator=gen, dtype=torch.float64)
    x32, y32 = x.float(), y.float()
    res = fit.ols(x32, y32)
    exact = fit.ols(x32.double(), y32.double())
    assert res.slope.dtype == torch.float32
    torch.testing.assert_close(res.slope.double(), exact.slope, rtol=1e-3, atol=0)


def test_sgd_training_converges_to_ols():
    """The source text's example: SGD on lossfn.mse reaches the closed-form fit."""
    gen = torch.Generator().manual_seed(1)
    x = torch.rand(100, 1, generator=gen)
    y = 1 + 2 * x + 0.1 * torch.randn(100, 1, generator=gen)
    model = torch.nn.Linear(1, 1)
    with torch.no_grad():
        model.weight.zero_()
        model.bias.zero_()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    for _ in range(1000):  # full batch: one step per epoch
        opt.zero_grad()
        lossfn.mse(model(x), y).backward()
        opt.step()
    res = fit.ols(x.squeeze(-1), y.squeeze(-1))
    assert abs(model.weight.item() - res.slope.item()) < 1e-3
    assert abs(model.bias.item() - res.intercept.item()) < 1e-3
    assert abs(res.slope.item() - 2) < 0.1 and abs(res.intercept.item() - 1) < 0.1


def test_gradient_flows_through_the_fit():
    """grad of the fitted slope w.r.t. y equals (x − x̄)/Sxx."""
    x = torch.tensor([0.0, 1.0, 3.0, 4.0], dtype=torch.float64)
    y = torch.tensor([1.0, 2.0, 2.5, 5.0], dtype=torch.float64)
    g = torch.func.grad(lambda v: fit.ols(x, v).slope)(y)
    centred = x - x.mean()
    torch.testing.assert_close(g, centred / (centred**2).sum())


def test_jacobian_of_the_multiple_fit():
    """d slope / d y is the pseudo-inverse of the centred design (a linear map)."""
    gen = torch.Generator().manual_seed(10)
    x, y = _random_batch(gen, 1, 12, 3)
    x, y = x[0], y[0]
    jac = torch.func.jacrev(lambda v: fit.ols(x, v).slope)(y)
    centred = (x - x.mean(0)).numpy()
    np.testing.assert_allclose(jac.numpy(), np.linalg.pinv(centred), rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize(
    "x, y, kwargs, error, words",
    [
        (torch.zeros(3, 5), torch.zeros(4), {}, lossfn.ShapeError, "same number of points"),
        (torch.zeros(3, 4), torch.zeros(4), {}, lossfn.ShapeError, "x.mT"),
        (torch.zeros(2, 3, 4, 5), torch.zeros(4), {}, lossfn.ShapeError, "(..., m, d)"),
        (torch.zeros(2, 4), torch.zeros(3, 4), {}, lossfn.ShapeError, "do not broadcast"),
        (torch.zeros(4, 0), torch.zeros(4), {}, lossfn.ShapeError, "no predictors"),
        (torch.zeros(4), torch.zeros(4, dtype=torch.float64), {}, TypeError, "x.to(y.dtype)"),
        (torch.zeros(4, dtype=torch.int64), torch.zeros(4), {}, TypeError, "x.float()"),
        (torch.zeros(4, dtype=torch.float16), torch.zeros(4, dtype=torch.float16), {}, TypeError,
         "float32 or float64"),
        (torch.zeros(4), torch.zeros(4), {"intercept": 1}, TypeError, "True or False"),
        (torch.zeros(4), torch.zeros(4), {"mask": torch.ones(4)}, TypeError, "bool"),
        (torch.zeros(4), torch.zeros(4), {"mask": torch.ones(5, dtype=torch.bool)},
         lossfn.ShapeError, "mask"),
    ],
)
def test_bad_arguments_raise_clearly(x, y, kwargs, error, words):
    with pytest.raises(error) as info:
        fit.ols(x, y, **kwargs)
    assert words in str(info.value)
    assert "ols" in str(info.value) or error is TypeError


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_rank_decision_accounts_for_offsets(dtype):
    """x₂ = 3x₀ − 2x₁ + 100 on offset data is collinear up to the rounding of the
    offsets: flagged. The same offsets without the collinearity fit fine."""
    gen = torch.Generator().manual_seed(9)
    spread = torch.tensor([1e-2, 3e-2, 1.0], dtype=torch.float64)
    x = (100 + torch.randn(2, 40, 3, generator=gen, dtype=torch.float64) * spread)
    x[1, :, 2] = 3 * x[1, :, 0] - 2 * x[1, :, 1] + 100
    y = x @ torch.tensor([1.0, -1.0, 0.5], dtype=torch.float64) + 0.01 * torch.randn(
        2, 40, generator=gen, dtype=torch.float64)
    x, y = x.to(dtype), y.to(dtype)
    res = fit.ols(x, y)
    assert res.ok.tolist() == [True, False]
    ref = sm.OLS(y[0].double().numpy(), sm.add_constant(x[0].double().numpy())).fit()
    rtol = 1e-9 if dtype == torch.float64 else 5e-2
    np.testing.assert_allclose(res.slope[0].double().numpy(), ref.params[1:], rtol=rtol)


def test_gradient_through_the_multiple_fit_with_a_mask():
    """Autograd (not only torch.func) through the masked multiple fit: d SSR / d y = 2r."""
    gen = torch.Generator().manual_seed(11)
    x, y = _random_batch(gen, 2, 10, 2)
    mask = torch.ones(2, 10, dtype=torch.bool)
    mask[1, 7:] = False
    y = y.clone().requires_grad_(True)
    res = fit.ols(x, y, mask=mask)
    (res.sigma2 * res.n).sum().backward()
    for k, length in enumerate([10, 7]):
        design = sm.add_constant(x[k, :length].numpy())
        resid = sm.OLS(y[k, :length].detach().numpy(), design).fit().resid
        np.testing.assert_allclose(y.grad[k, :length].numpy(), 2 * resid, rtol=1e-8, atol=1e-10)
        assert torch.all(y.grad[k, length:] == 0)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("d", [None, 2])
def test_batches_split_into_blocks_match_statsmodels(monkeypatch, dtype, d):
    """Big batches are fitted in blocks of datasets; force many small, uneven
    blocks (batch (5, 2), a broadcast x, a mask, a degenerate dataset) and check
    every dataset against statsmodels."""
    # 1 or 2 rows of the batch per block (the last one shorter), depending on dtype and d
    monkeypatch.setattr(lossfn.fit._design, "BLOCK_BYTES", 1200)
    gen = torch.Generator().manual_seed(12)
    m = 30
    x = torch.randn(1, 2, m, d or 1, generator=gen, dtype=torch.float64) * 2 + 50
    x = x.expand(5, 2, m, d or 1)  # one design shared by the first batch dim
    y = x.sum(-1) * 0.7 - 3 + torch.randn(5, 2, m, generator=gen, dtype=torch.float64)
    mask = torch.rand(5, 2, m, generator=gen) < 0.8
    mask[3, 1] = False  # a dataset with no points
    x_in = x.squeeze(-1) if d is None else x
    res = fit.ols(x_in.to(dtype), y.to(dtype), mask=mask)
    assert res.ok.sum().item() == 9 and not res.ok[3, 1]
    rtol = 1e-9 if dtype == torch.float64 else 2e-3
    for i in range(5):
        for j in range(2):
            if (i, j) == (3, 1):
                assert torch.isnan(res.slope[i, j]).all()
                continue
            keep = mask[i, j].numpy()
            xs = x[i, j].to(dtype).double().numpy()[keep]
            ys = y[i, j].to(dtype).double().numpy()[keep]
            ref = sm.OLS(ys, sm.add_constant(xs, has_constant="add")).fit()
            ours = np.concatenate([[res.intercept[i, j].item()],
                                   np.atleast_1d(res.slope[i, j].double().numpy())])
            np.testing.assert_allclose(ours, ref.params, rtol=rtol)
            np.testing.assert_allclose(res.stderr[i, j].double().numpy(), ref.bse, rtol=rtol)
            assert res.sigma2[i, j].item() * keep.sum() == pytest.approx(ref.ssr, rel=rtol)
            assert res.r2[i, j].item() == pytest.approx(ref.rsquared, rel=rtol)


@pytest.mark.parametrize("name", ["Longley", "Pontius", "Wampler4", "Wampler5"])
def test_float32_nist_designs_match_statsmodels(name):
    """float32 data with polynomial (Wampler, Pontius) or collinear (Longley)
    designs: the fit matches statsmodels' float64 fit of the same float32 data
    to float32 precision (naive float32 normal equations lose every digit)."""
    data = regression(name)
    x, y = torch.tensor(data.x).float(), torch.tensor(data.y).float()
    res = fit.ols(x, y)
    assert res.ok.item() and res.slope.dtype == torch.float32
    xs = x.double().numpy().reshape(len(data.y), -1)
    ref = sm.OLS(y.double().numpy(), sm.add_constant(xs)).fit()
    assert lre(_coefficients(res, True), ref.params) >= 5.5
    assert lre(res.stderr.numpy(), ref.bse) >= 6


def test_every_batch_dim_is_split_into_blocks(monkeypatch, route):
    """A batch of shape (1, B) is cut into blocks like one of shape (B,): the
    block size holds, and each dataset still matches scipy. (The torch route's
    blocking; the native kernel reads each dataset once, in cache, by design.)"""
    if route == "native":
        pytest.skip("blocks are the torch route's")
    monkeypatch.setattr(lossfn.fit._design, "BLOCK_BYTES", 2000)
    seen = []
    real = lossfn.fit._design._line_sums

    def spy(y, *rest):
        seen.append(y.shape)
        return real(y, *rest)

    monkeypatch.setattr(lossfn.fit._design, "_line_sums", spy)
    gen = torch.Generator().manual_seed(21)
    x = torch.randn(1, 12, 25, generator=gen, dtype=torch.float64)
    y = 2 - x + 0.3 * torch.randn(1, 12, 25, generator=gen, dtype=torch.float64)
    res = fit.ols(x, y)
    # 25 points x 8 bytes x (x and y) + 8 bytes of n = 408 bytes per dataset: blocks of 4.
    assert [s[0] for s in seen] == [4, 4, 4]
    assert res.slope.shape == (1, 12)
    for k in range(12):
        ref = scipy.stats.linregress(x[0, k].numpy(), y[0, k].numpy())
        assert res.slope[0, k].item() == pytest.approx(ref.slope, rel=1e-12)
        assert res.intercept[0, k].item() == pytest.approx(ref.intercept, rel=1e-12)


# The solver takes different routes by the number of columns k = d + 1: a Gram
# matrix row by row up to k = 16, zero-padded rows beyond (lossfn.fit._solve).
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("d", [15, 16, 20])
def test_many_predictors_match_statsmodels(dtype, d):
    gen = torch.Generator().manual_seed(20 + d)
    x, y = _random_batch(gen, 3, 60, d)
    x, y = x.to(dtype), y.to(dtype)
    res = fit.ols(x, y)
    assert res.ok.all()
    rtol = 1e-9 if dtype == torch.float64 else 1e-3
    for k in range(3):
        xs, ys = x[k].double().numpy(), y[k].double().numpy()
        ref = sm.OLS(ys, sm.add_constant(xs)).fit()
        ours = _coefficients(fit.OLSFit(*(f[k] for f in res)), True)
        np.testing.assert_allclose(ours, ref.params, rtol=rtol)
        np.testing.assert_allclose(res.stderr[k].double().numpy(), ref.bse, rtol=rtol)
        assert res.sigma2[k].item() * 60 == pytest.approx(ref.ssr, rel=rtol)
        assert res.r2[k].item() == pytest.approx(ref.rsquared, rel=rtol)


@pytest.mark.parametrize("d", [3, 18])
def test_many_predictors_padded_equals_trimmed_and_vmap(d):
    gen = torch.Generator().manual_seed(30 + d)
    lengths = [25, 40, 31]
    x, y = _random_batch(gen, 3, 40, d)
    mask = torch.arange(40) < torch.tensor(lengths).unsqueeze(-1)
    x_bad = torch.where(mask.unsqueeze(-1), x, math.nan)
    y_bad = torch.where(mask, y, 1e30)
    res = fit.ols(x_bad, y_bad, mask=mask)
    mapped = torch.func.vmap(lambda a, b, c: fit.ols(a, b, mask=c))(x_bad, y_bad, mask)
    for k, length in enumerate(lengths):
        alone = fit.ols(x[k, :length], y[k, :length])
        for field, value, via_vmap in zip(res._fields, res, mapped):
            torch.testing.assert_close(value[k], getattr(alone, field), rtol=1e-11, atol=1e-13,
                                       msg=field)
            torch.testing.assert_close(via_vmap[k], value[k], rtol=1e-12, atol=1e-14, msg=field)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("d", [2, 18])
def test_exact_fit_has_zero_residual(dtype, d):
    """y an exact integer combination of integer predictors: the coefficients are
    exact to working precision and the SSR is 0 up to rounding of b, not of b²."""
    gen = torch.Generator().manual_seed(40 + d)
    x = torch.randint(-50, 50, (2, 3 * d, d), generator=gen).to(torch.float64) + 300
    beta = torch.randint(-5, 6, (2, d), generator=gen).to(torch.float64)
    y = (x @ beta.unsqueeze(-1)).squeeze(-1) + 7  # exact in float32 as well
    res = fit.ols(x.to(dtype), y.to(dtype))
    assert res.ok.all()
    eps = torch.finfo(dtype).eps
    torch.testing.assert_close(res.slope.double(), beta, rtol=0, atol=1e3 * eps)
    syy = ((y - y.mean(-1, keepdim=True)) ** 2).sum(-1)
    # float64: √eps·‖b‖ would be the best of ‖b‖² − γᵀγ; the QR-style R keeps
    # eps·‖b‖. float32 (solved in float64, SSR = ‖b‖² − γᵀγ there): below what a
    # float32 residual, (eps32·‖b‖)², could resolve.
    bound = 1e-20 if dtype == torch.float64 else 1e-13
    assert torch.all(res.sigma2.double() * 3 * d <= bound * syy)


def test_constant_response_fits_a_flat_plane():
    gen = torch.Generator().manual_seed(50)
    x = torch.randn(2, 30, 4, generator=gen, dtype=torch.float64)
    y = torch.full((2, 30), 2.5, dtype=torch.float64)
    res = fit.ols(x, y)
    assert res.ok.all()
    torch.testing.assert_close(res.slope, torch.zeros(2, 4, dtype=torch.float64), rtol=0, atol=1e-15)
    torch.testing.assert_close(res.intercept, torch.full((2,), 2.5, dtype=torch.float64))
    assert torch.all(res.sigma2 == 0) and torch.isnan(res.r2).all()  # 0/0: documented


@pytest.mark.parametrize("d", [3, 18])
def test_float32_two_pass_route_of_accelerators(monkeypatch, d):
    """Off the CPU, float32 stays float32: CholeskyQR2 in float32 with the
    one-pass centring's leftover mean removed in the small algebra. Forced here
    on the CPU, on offset data (where a plain float32 Gram loses every digit)."""
    monkeypatch.setattr(lossfn.fit._ols, "_precision", lambda x: (x.dtype, None))
    gen = torch.Generator().manual_seed(60 + d)
    offsets = torch.linspace(-50.0, 1e3, d, dtype=torch.float64)
    x = torch.rand(3, 200, d, generator=gen, dtype=torch.float64) + offsets
    y = x @ torch.linspace(-2.0, 1.5, d, dtype=torch.float64) + 0.05 * torch.randn(
        3, 200, generator=gen, dtype=torch.float64)
    x32, y32 = x.float(), y.float()
    mask = torch.ones(3, 200, dtype=torch.bool)
    mask[1, 150:] = False
    res = fit.ols(x32, y32, mask=mask)
    assert res.ok.all() and res.slope.dtype == torch.float32
    for k in range(3):
        keep = mask[k].numpy()
        xs, ys = x32[k].double().numpy()[keep], y32[k].double().numpy()[keep]
        ref = sm.OLS(ys, sm.add_constant(xs)).fit()
        ours = _coefficients(fit.OLSFit(*(f[k] for f in res)), True)
        assert lre(ours[1:], ref.params[1:]) >= 5  # measured 5.8-7
        assert res.sigma2[k].item() * keep.sum() == pytest.approx(ref.ssr, rel=1e-2)


@pytest.mark.parametrize("case", ["exact", "constant"])
def test_gradients_at_exact_fits_and_constant_responses(case):
    """d(Σβ + σ²)/dy stays finite where the residual vanishes: d σ²/dy = 2r/n = 0,
    and d β/dy is the pseudo-inverse of the centred design."""
    gen = torch.Generator().manual_seed(70)
    x = torch.randn(14, 3, generator=gen, dtype=torch.float64)
    if case == "exact":
        y = x @ torch.tensor([1.0, -2.0, 0.5], dtype=torch.float64) + 3
    else:
        y = torch.full((14,), 4.0, dtype=torch.float64)
    g = torch.func.grad(lambda v: (fit.ols(x, v).slope.sum() + fit.ols(x, v).sigma2))(y)
    centred = (x - x.mean(0)).numpy()
    np.testing.assert_allclose(g.numpy(), np.linalg.pinv(centred).sum(0), rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("batch", [(0,), (2, 0)])
@pytest.mark.parametrize("d", [None, 3])
def test_empty_batches_give_empty_results(batch, d):
    x = torch.randn(*batch, 40) if d is None else torch.randn(*batch, 40, d)
    res = fit.ols(x, torch.randn(*batch, 40))
    assert res.intercept.shape == batch and res.ok.shape == batch and res.n.shape == batch
    assert res.slope.shape == (batch if d is None else batch + (d,))
    assert res.stderr.shape == batch + (2 if d is None else d + 1,)


@pytest.mark.parametrize("masked", [False, True])
@pytest.mark.parametrize("scale_x, scale_y", [(1.0, 1e-30), (1.0, 1e25), (1e-25, 1e-30), (1e25, 1e20),
                                              (1e-30, 1e-20), (1e20, 1.0)])
def test_float32_simple_fits_at_any_uniform_scale(scale_x, scale_y, masked):
    """float32 squares overflow from ~1e19 and underflow below ~1e-19: SI-unit data
    (1e-30) once gave σ̂ = 0 and standard errors of 0, data of 1e25 a slope of 0
    with ok=True. Against scipy's linregress in float64 on the same float32 data."""
    gen = torch.Generator().manual_seed(90)
    x = torch.randn(4, 60, generator=gen, dtype=torch.float64)
    y = 2 * x + 0.5 + 0.3 * torch.randn(4, 60, generator=gen, dtype=torch.float64)
    x32, y32 = (x * scale_x).float(), (y * scale_y).float()
    x32[1, :4] = y32[1, :4] = 0  # the first points carry no size
    mask = torch.ones(4, 60, dtype=torch.bool)
    if masked:
        mask[2, :7] = False
        mask[3, 40:] = False
    given = mask if masked else None
    res = fit.ols(x32, y32, mask=given)
    origin = fit.ols(x32, y32, mask=given, intercept=False)
    std = fit.standardized(x32, y32, mask=given)
    assert res.ok.all() and origin.ok.all() and std.ok.all()
    for k in range(4):
        # float64 holds these squares; statsmodels' pinv would cut a column
        # of 1e-25 next to the constant's 1 as rank-deficient, linregress not.
        keep = mask[k].numpy()
        xs, ys = x32[k].double().numpy()[keep], y32[k].double().numpy()[keep]
        ref = scipy.stats.linregress(xs, ys)
        assert res.intercept[k].item() == pytest.approx(ref.intercept, rel=2e-5)
        assert res.slope[k].item() == pytest.approx(ref.slope, rel=2e-5)
        assert res.stderr[k, 0].item() == pytest.approx(ref.intercept_stderr, rel=2e-4)
        assert res.stderr[k, 1].item() == pytest.approx(ref.stderr, rel=2e-4)
        assert res.r2[k].item() == pytest.approx(ref.rvalue**2, abs=1e-5)
        sigma2 = np.mean((ys - ref.intercept - ref.slope * xs) ** 2)
        if 1e-37 < sigma2 < 1e37:  # representable in float32
            assert res.sigma2[k].item() == pytest.approx(sigma2, rel=2e-4)
        through = (xs @ ys) / (xs @ xs)
        se_through = np.sqrt(((ys - through * xs) ** 2).sum() / (len(xs) - 1) / (xs @ xs))
        assert origin.slope[k].item() == pytest.approx(through, rel=2e-5)
        assert origin.stderr[k, 0].item() == pytest.approx(se_through, rel=2e-4)
        assert std.rho[k].item() == pytest.approx(ref.rvalue, abs=1e-6)
        assert std.std_y[k].item() == pytest.approx(ys.std(), rel=1e-5)


def test_float32_subnormal_sums_are_not_ok(route):
    # The first points and the mean 0: on the torch route the unit stays 1 and
    # Σ(x − x̄)² of 1e-44 is subnormal, a few significant bits. Once ok=True with
    # the standard errors 0; now not ok, with or without a mask. Moved to the
    # front, the same points give the unit and fit. The native kernel sums in
    # float64, where nothing is subnormal: it fits them as they are.
    k = np.r_[0, 0, 0, 0, np.arange(1, 9), -np.arange(1, 9)].astype(np.float64)
    x = torch.tensor(k * 10**-22.8, dtype=torch.float32)
    y = torch.tensor(3.0 * k + np.sin(np.arange(k.size)), dtype=torch.float32)
    ones = torch.ones(k.size, dtype=torch.bool)
    cases = [(x.flip(0), y.flip(0))] + ([(x, y)] if route == "native" else [])
    if route == "torch":
        assert not fit.ols(x, y).ok
        assert not fit.ols(x, y, mask=ones).ok
    for x, y in cases:
        ref = scipy.stats.linregress(x.double().numpy() * 2.0**76, y.double().numpy())  # exact rescaling
        for res in (fit.ols(x, y), fit.ols(x, y, mask=ones)):
            assert res.ok and res.slope.item() == pytest.approx(ref.slope * 2.0**76, rel=1e-5)
            assert res.stderr[1].item() == pytest.approx(ref.stderr * 2.0**76, rel=1e-4)


@pytest.mark.parametrize("solver", ["cpu", "accelerator"])
def test_float32_sigma2_where_ssr_overflows_but_ssr_over_n_does_not(monkeypatch, solver):
    # m = 4000, noise of 2e18: SSR ≈ 1.6e40 overflows float32, σ̂² ≈ 4e36 does not.
    if solver == "accelerator":
        monkeypatch.setattr(lossfn.fit._ols, "_precision", lambda x: (x.dtype, None))
    g = torch.Generator().manual_seed(4)
    x = torch.randn(1, 4000, 2, generator=g, dtype=torch.float64)
    y = (x @ torch.tensor([1.0, 2.0], dtype=torch.float64)
         + torch.randn(1, 4000, generator=g, dtype=torch.float64)) * 2e18
    x32, y32 = x.float(), y.float()
    for design in (x32, x32[..., 0]):
        res = fit.ols(design, y32)
        A = np.c_[np.ones(4000), design[0].double().numpy().reshape(4000, -1)]
        ys = y32[0].double().numpy() * 2.0**-61  # exactly rescaled
        r = ys - A @ np.linalg.lstsq(A, ys, rcond=None)[0]
        assert res.ok and res.sigma2.item() == pytest.approx((r @ r) / 4000 * 2.0**122, rel=1e-4)


def test_float32_coefficients_outside_the_range_are_not_ok(monkeypatch):
    # x of 1e30, y of 1e-20: the slope (5e-51) rounds to 0 in float32, and the
    # intercept then lost β·x̄ (5e-21, representable): once ok=True with an
    # intercept 2.3x too large. x of 2^-100, y of 2^100: a slope of 2^200.
    g = torch.Generator().manual_seed(0)
    u = torch.rand(20, generator=g)
    x = ((1 + u) * 1e30).float()
    y = ((1 + 0.5 * u + 0.01 * torch.randn(20, generator=g)) * 1e-20).float()
    x2 = torch.randn(40, generator=g)
    y2 = 1.5 * x2 + 2 + torch.randn(40, generator=g)
    cases = [(x, y), (x2 * 2.0**-100, y2 * 2.0**100)]
    for xs, ys in cases:
        fits = [fit.ols(xs, ys), fit.ols(xs, ys, mask=torch.ones(len(ys), dtype=torch.bool)),
                fit.ols(xs[:, None], ys), fit.lad(xs, ys), fit.huber(xs, ys)]
        monkeypatch.setattr(lossfn.fit._ols, "_precision", lambda t: (t.dtype, None))
        fits.append(fit.ols(xs[:, None], ys))
        monkeypatch.undo()
        assert not any(bool(f.ok) for f in fits)
    # Empty datasets (m = 0) are not ok either, in float32 too, and raise nothing.
    for dtype in (torch.float32, torch.float64):
        none = torch.zeros(3, 0, dtype=dtype)
        two = torch.zeros(3, 0, 2, dtype=dtype)
        for f in (fit.ols(none, none), fit.ols(none, none, intercept=False),
                  fit.ols(none, none, mask=torch.zeros(3, 0, dtype=torch.bool)),
                  fit.ols(none.unsqueeze(-1), none), fit.ols(two, none, intercept=False),
                  fit.lad(none, none), fit.huber(none, none)):
            assert f.ok.shape == (3,) and not f.ok.any()


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("value", [0.0, 3.0, 0.1, 1.7272787, 11.123665587344508])
@pytest.mark.parametrize("m", [9, 10, 100, 1000])
def test_simple_fit_of_a_constant_response_is_ok(dtype, value, m):
    # ρ = 0/0 there: the range check once read it as a lost slope (ok=False).
    # On the torch route the first-pass mean's rounding once left Σdy² and
    # Σdx·dy at rounding level: slope nan and ok=False (float32, m = 100), or
    # a slope of 1e-17 with r2 = 1 (m = 1000). Exact: slope 0, r2 = 0/0.
    gen = torch.Generator().manual_seed(m)
    x = torch.randn(m, generator=gen, dtype=torch.float64).to(dtype)
    y = torch.full((m,), value, dtype=dtype)
    mask = torch.ones(m, dtype=torch.bool)
    mask[0] = False
    y_absent = y.clone()
    y_absent[0] = torch.nan  # absent: never read
    for res in (fit.ols(x, y), fit.ols(x, y_absent, mask=mask)):
        assert res.ok and res.slope.item() == 0 and res.intercept.item() == y[1].item()
        assert torch.isnan(res.r2)  # 0/0, documented
        assert res.sigma2.item() == 0 and res.stderr[1].item() == 0
    # a nan among the present points is not a constant response
    y_nan = y.clone()
    y_nan[-1] = torch.nan
    assert not fit.ols(x, y_nan).ok


def test_float32_columns_near_the_top_of_the_range(monkeypatch):
    # x of 1e38: Σ|x| overflows before any value does; units from the largest value.
    g = torch.Generator().manual_seed(1)
    x = torch.randn(2, 12, 2, generator=g)
    y = x @ torch.tensor([2.0, -1.0]) + 0.5 + 0.1 * torch.randn(2, 12, generator=g)
    big = x * 1e38
    monkeypatch.setattr(lossfn.fit._ols, "_precision", lambda x: (x.dtype, None))
    fits = (fit.ols(big, y), fit.lad(big, y), fit.huber(big, y))
    assert all(res.ok.all() for res in fits)
    for k in range(2):
        xs, ys = big[k].double().numpy() / 1e38, y[k].double().numpy()
        ref = sm.OLS(ys, sm.add_constant(xs)).fit()
        rlm = sm.RLM(ys, sm.add_constant(xs), M=sm.robust.norms.HuberT(t=1.345)).fit(maxiter=500, tol=1e-12)
        np.testing.assert_allclose(fits[0].slope[k].double().numpy() * 1e38, ref.params[1:], rtol=1e-4)
        np.testing.assert_allclose(fits[2].slope[k].double().numpy() * 1e38, rlm.params[1:], rtol=1e-3)
        # LAD: the objective of the unit-scale problem at our coefficients is the LP optimum's.
        from scipy.optimize import linprog
        A = sm.add_constant(xs)
        lp = linprog(np.r_[0, 0, 0, np.ones(24)], A_eq=np.c_[A, np.eye(12), -np.eye(12)], b_eq=ys,
                     bounds=[(None, None)] * 3 + [(0, None)] * 24, method="highs")
        ours = np.r_[fits[1].intercept[k].item(), fits[1].slope[k].double().numpy() * 1e38]
        assert np.abs(ys - A @ ours).sum() == pytest.approx(lp.fun, rel=1e-5)


def test_float32_slope_whose_units_ratio_leaves_float32():
    # x of 1e-30 and y of 1e9 ± 1e3: units 2^100 and 2^-30, whose ratio 2^130
    # overflows float32, while the slope (2e33) does not.
    gen = torch.Generator().manual_seed(91)
    x = torch.randn(2, 50, generator=gen, dtype=torch.float64)
    y = 1e9 + 1e3 * (2 * x + 0.1 * torch.randn(2, 50, generator=gen, dtype=torch.float64))
    x32, y32 = (x * 1e-30).float(), y.float()
    for mask in (None, torch.ones(2, 50, dtype=torch.bool)):
        res = fit.ols(x32, y32, mask=mask)
        origin = fit.ols(x32, y32, mask=mask, intercept=False)
        assert res.ok.all() and origin.ok.all()
        for k in range(2):
            xs, ys = x32[k].double().numpy(), y32[k].double().numpy()
            assert res.slope[k].item() == pytest.approx(scipy.stats.linregress(xs, ys).slope, rel=1e-4)
            assert origin.slope[k].item() == pytest.approx((xs @ ys) / (xs @ xs), rel=1e-4)


def test_float32_sums_that_overflow_or_underflow_are_not_ok(route):
    # The unit comes from the mean and the first points on the torch route.
    # Where both are far smaller than the other values, the sums over- or
    # underflow in float32, and the fit says so instead of a slope of 0 or a
    # standard error of 0. The native kernel's float64 sums hold them: a fit.
    x = torch.tensor([[1.0, 2.0, 3.0, 4.0, 5e30, -5e30, 6.0], [1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0]])
    y = torch.tensor([[1.0, 2.0, 3.0, 4.0, 5.0, 7.0, 8.0]] * 2)
    res = fit.ols(x, y)
    if route == "torch":
        assert res.ok.tolist() == [False, True] and torch.isnan(res.slope[0])
        assert fit.standardized(x, y).ok.tolist() == [False, True]
    else:
        assert res.ok.all() and fit.standardized(x, y).ok.all()
        for k in range(2):
            ref = scipy.stats.linregress(x[k].double().numpy(), y[k].double().numpy())
            assert res.slope[k].item() == pytest.approx(ref.slope, rel=1e-6)
            assert res.intercept[k].item() == pytest.approx(ref.intercept, rel=1e-6)
            assert res.stderr[k, 1].item() == pytest.approx(ref.stderr, rel=1e-5)
    # Mean exactly 0 and the first points 0: the response takes its unit from
    # its largest value, so Σ(y − ȳ)² of 1e-60 no longer underflows (exact).
    x = torch.arange(8.0).expand(2, 8)
    y = torch.tensor([[0.0, 0.0, 0.0, 0.0, 1e-30, -1e-30, 2e-30, -2e-30],
                      [0.0, 0.0, 0.0, 0.0, 1.0, -1.0, 2.0, -2.0]])
    for res in (fit.ols(x, y), fit.ols(x, y, mask=torch.ones(2, 8, dtype=torch.bool))):
        assert res.ok.all()
        for k in range(2):
            unit = 2.0**100 if k == 0 else 1.0  # exact rescaling for the float64 oracle
            ref = scipy.stats.linregress(x[k].double().numpy(), y[k].double().numpy() * unit)
            assert res.slope[k].item() == pytest.approx(ref.slope / unit, rel=1e-5)


@pytest.mark.parametrize("scale_x, scale_y", [(1.0, 1e-30), (1e25, 1e20), (1e-30, 1.0)])
def test_float32_route_of_accelerators_at_any_scale(monkeypatch, scale_x, scale_y):
    """Off the CPU the Gram matrices stay float32 and are formed in power-of-two
    units of the columns: y of 1e-30 once gave standard errors of 0 with ok=True
    (seen on an H100), x of 1e25 ok=False. Forced here on the CPU. Oracle:
    statsmodels on the same float32 data brought to unit scale in float64."""
    monkeypatch.setattr(lossfn.fit._ols, "_precision", lambda x: (x.dtype, None))
    gen = torch.Generator().manual_seed(92)
    x = torch.randn(3, 80, 2, generator=gen, dtype=torch.float64)
    y = x @ torch.tensor([1.5, -2.0], dtype=torch.float64) + 0.7 + 0.2 * torch.randn(
        3, 80, generator=gen, dtype=torch.float64)
    x32, y32 = (x * scale_x).float(), (y * scale_y).float()
    mask = torch.ones(3, 80, dtype=torch.bool)
    mask[1, 60:] = False
    for given in (None, mask):
        for intercept in (True, False):
            res = fit.ols(x32, y32, mask=given, intercept=intercept)
            assert res.ok.all()
            for k in range(3):
                keep = mask[k].numpy() if given is not None else np.ones(80, dtype=bool)
                xs = x32[k].double().numpy()[keep] / scale_x
                ys = y32[k].double().numpy()[keep] / scale_y
                ref = sm.OLS(ys, sm.add_constant(xs) if intercept else xs).fit()
                unit = np.r_[scale_y, np.full(2, scale_y / scale_x)][0 if intercept else 1:]
                ours = np.r_[res.intercept[k].item(), res.slope[k].double().numpy()][0 if intercept else 1:]
                np.testing.assert_allclose(ours / unit, ref.params, rtol=1e-4, atol=1e-5)
                np.testing.assert_allclose(res.stderr[k].double().numpy() / unit, ref.bse, rtol=1e-3)
                assert res.r2[k].item() == pytest.approx(ref.rsquared, abs=1e-5)
                sigma2 = ref.ssr / keep.sum() * scale_y**2
                if 1e-37 < sigma2 < 1e37:
                    assert res.sigma2[k].item() == pytest.approx(sigma2, rel=1e-3)


# Units that miss the data: the response's unit from its largest value, ρ from √Sxx·√Syy.

K = np.arange(1, 9, dtype=np.float64)
NOISE = np.array([1, -1, 0, 1, 0, -1, 1, 0], dtype=np.float64)


def _paired_data(ex, ey, lead_zeros=0, pad=0):
    xs = np.r_[np.zeros(lead_zeros), K, -K]
    ys = np.r_[np.zeros(lead_zeros), 3 * K + NOISE, -(3 * K + NOISE)]
    X = np.r_[[np.nan] * pad, xs * 2.0**ex]
    Y = np.r_[[np.nan] * pad, ys * 2.0**ey]
    return xs, ys, torch.tensor(X, dtype=torch.float32), torch.tensor(Y, dtype=torch.float32)


@pytest.mark.parametrize("masked", [False, True])
def test_underflowed_response_is_not_read_as_constant(masked):
    # x ~ 1e-17, y ~ 1e-33 (normal float32), mean 0, first points absent (left padding) or 0:
    # Σdy² and every dx·dy underflow to 0 in unit 1; was slope 0, r2 nan, ok=True.
    ex, ey = -56, -110
    xs, ys, x, y = _paired_data(ex, ey, lead_zeros=0 if masked else 4, pad=4 if masked else 0)
    if not masked:
        xs, ys = np.r_[np.zeros(4), xs], np.r_[np.zeros(4), ys]
    ref = scipy.stats.linregress(xs, ys)
    res = fit.ols(x, y, mask=torch.isfinite(x)) if masked else fit.ols(x, y)
    assert res.ok
    assert res.slope.item() == pytest.approx(ref.slope * 2.0**(ey - ex), rel=1e-5)
    assert res.r2.item() == pytest.approx(ref.rvalue**2, abs=1e-5)


@pytest.mark.parametrize("e", [25, 30, -45, -50])
@pytest.mark.parametrize("masked", [False, True])
def test_standardized_rho_when_sxx_syy_product_leaves_the_range(e, masked):
    # Integer data, mean exactly 0, first 4 points 0/absent: unit 1; Sxx·Syy overflows (rho read 0,
    # ok=True), goes subnormal (rho off by 3e-3, ok=True) or to 0 (false alarm).
    rng = np.random.default_rng(0)
    t = np.round(rng.standard_normal(36) * 64)
    u = 2 * t + np.round(20 * rng.standard_normal(36))
    xs, ys = np.r_[np.zeros(4), t, np.zeros(4), -t], np.r_[np.zeros(4), u, np.zeros(4), -u]
    ref = np.corrcoef(xs, ys)[0, 1]
    x = torch.tensor(xs * 2.0**e, dtype=torch.float32)
    y = torch.tensor(ys * 2.0**e, dtype=torch.float32)
    if masked:
        x, y = torch.cat([torch.full((4,), torch.nan), x]), torch.cat([torch.full((4,), torch.nan), y])
        s = fit.standardized(x, y, mask=torch.isfinite(x))
    else:
        s = fit.standardized(x, y)
    assert s.ok and s.rho.item() == pytest.approx(ref, abs=1e-5)


def test_a_constant_column_among_several_is_never_ok():
    # The native Gram kernel once summed a constant column's mean 15-30 eps
    # off, so the centred column was a constant above the rank test's noise
    # floor and orthogonal to the rest: ok=True, coefficients meaningless
    # (58 of 150 such designs at d = 2). Oracle: by construction, a column
    # equal to one value everywhere is collinear with the intercept (numpy's
    # matrix_rank of the centred design would see its rounded mean, not this).
    rng = np.random.default_rng(0)
    for case in range(60):
        d, m = 1 + case % 3, int(rng.integers(100, 3000))
        x = rng.standard_normal((m, d))
        column = int(rng.integers(d))
        x[:, column] = rng.uniform(0.05, 1000)
        y = x.sum(1) + rng.standard_normal(m)
        assert (x[:, column] == x[0, column]).all()
        res = fit.ols(torch.tensor(x), torch.tensor(y))
        assert not res.ok, (case, x[0, column], m)


@pytest.mark.parametrize("seed", [0, 3])
def test_many_points_at_a_large_offset_keep_their_digits(seed):
    # m = 3e5 points at an offset of 1e10: a first-pass mean summed point by
    # point is off by ~m/256 eps, and the native Gram kernel once gave slopes
    # 5e-11 off (both routes now stay below 1.1e-12). Oracle: the closed form
    # with every sum correctly rounded (math.fsum).
    rng = np.random.default_rng(seed)
    m = 300_000
    x = 1e10 + rng.standard_normal(m)
    y = 3.0 - 0.5 * (x - 1e10) + rng.standard_normal(m)
    mx, my = math.fsum(x) / m, math.fsum(y) / m
    slope = math.fsum((x - mx) * (y - my)) / math.fsum((x - mx) ** 2)
    for design in (torch.tensor(x), torch.tensor(x)[:, None]):
        res = fit.ols(design, torch.tensor(y))
        assert res.ok and float(res.slope.reshape(())) == pytest.approx(slope, rel=5e-12, abs=0)


def test_each_route_is_the_one_it_says(monkeypatch, route):
    # The "native" runs of this module test the kernels only if fits reach
    # them: spy on both, for one predictor and for several.
    import lossfn.fit._design
    import lossfn.fit._ols

    served = []
    for module, name in ((lossfn.fit._ols, "line_fit"), (lossfn.fit._ols, "ols_fit")):
        real = getattr(module, name)
        monkeypatch.setattr(module, name, lambda *a, _real=real, **k: served.append(_real(*a, **k)) or served[-1])
    gen = torch.Generator().manual_seed(5)
    x = torch.randn(3, 40, 2, generator=gen, dtype=torch.float64)
    y = x.sum(-1) + torch.randn(3, 40, generator=gen, dtype=torch.float64)
    for xs in (x[..., 0].contiguous(), x, x.float()):
        fit.ols(xs, y.to(xs.dtype))
    if route == "native":  # one call each: well-conditioned float64 data need one pass only
        assert len(served) == 3 and all(s is not None for s in served)
    else:  # every call declined (the second pass is never asked for)
        assert len(served) == 3 and all(s is None for s in served)


def test_float64_response_that_varies_by_one_ulp():
    # The torch route's float64 path once skipped the shifted-sum correction:
    # with y's spread at its mean's rounding level, σ̂² came out ~n times too
    # large (3.2e-30 against 3.1e-33). Oracle: exact rational arithmetic.
    from fractions import Fraction

    gen = torch.Generator().manual_seed(0)
    x = torch.randn(1000, generator=gen, dtype=torch.float64)
    y = torch.full((1000,), 11.123665587344508, dtype=torch.float64)
    y[0] = torch.nextafter(y[0], torch.tensor(99.0, dtype=torch.float64))
    xs = [Fraction(v) for v in x.tolist()]
    ys = [Fraction(v) for v in y.tolist()]
    mx, my = sum(xs) / 1000, sum(ys) / 1000
    sxx = sum((a - mx) ** 2 for a in xs)
    sxy = sum((a - mx) * (b - my) for a, b in zip(xs, ys))
    syy = sum((b - my) ** 2 for b in ys)
    ssr = syy - sxy * sxy / sxx
    res = fit.ols(x, y)
    assert res.ok
    assert res.slope.item() == pytest.approx(float(sxy / sxx), rel=1e-9)
    assert res.sigma2.item() == pytest.approx(float(ssr / 1000), rel=1e-6)
    assert res.r2.item() == pytest.approx(float(1 - ssr / syy), rel=1e-6)


def _mp_least_squares(X: np.ndarray, y: np.ndarray):
    """Least squares with an intercept in 40-digit arithmetic (mpmath): the
    coefficients (intercept first), their standard errors and SSR/n."""
    import mpmath

    # Columns and y in power-of-two units first (exact): mpmath's singularity
    # test is absolute, and a column of 1e-160 would fail it.
    ux = 2.0 ** -np.frexp(np.abs(X).max(0))[1]
    uy = 2.0 ** -np.frexp(np.abs(y).max())[1]
    with mpmath.workdps(40):
        m, d = X.shape
        A = mpmath.matrix([[1] + [mpmath.mpf(float(v)) for v in row] for row in X * ux])
        b = mpmath.matrix([mpmath.mpf(float(v)) for v in y * uy])
        G = A.T * A
        Gi = mpmath.inverse(G)
        beta = Gi * (A.T * b)
        r = b - A * beta
        ssr = sum(v * v for v in r)
        s2 = ssr / (m - d - 1)
        se = [mpmath.sqrt(s2 * Gi[j, j]) for j in range(d + 1)]
        unit = np.r_[1.0, ux] / uy
        return (np.array([float(v) for v in beta]) * unit, np.array([float(v) for v in se]) * unit,
                float(ssr / m) / uy / uy)


def _relative(a, b):
    return np.abs(np.asarray(a) - np.asarray(b)).max() / np.abs(np.asarray(b)).max()


def test_one_pass_is_taken_only_where_it_keeps_twelve_digits(route, monkeypatch):
    # The rule that lets float64 datasets skip CholeskyQR2's second pass, and
    # the fits themselves, against 40-digit least squares: over a grid of
    # collinearity and fit quality, every one-pass dataset keeps 12 digits in
    # its coefficients, standard errors and sigma2. Then the cases a review
    # found to slip through an earlier rule: a design near the limit with
    # r2 = 0.9996 (sigma2 off by 8e-10), a weak regression (r2 = 1e-3), and a
    # column of 1e-160, whose squares are subnormal (slopes off by 1e-5).
    from lossfn._native import ols_record
    from lossfn.fit._solve import ONE_PASS_ERROR

    g = torch.Generator().manual_seed(21)
    B, m, d = 60, 80, 4
    X = torch.randn(B, m, d, generator=g, dtype=torch.float64)
    # Every pairing of 10 degrees of collinearity and 6 of closeness to an exact fit.
    spread = (10.0 ** torch.linspace(-7, 1, 10, dtype=torch.float64)).repeat_interleave(6)
    noise = (10.0 ** -torch.tensor([0.0, 0.5, 1, 2, 5, 8], dtype=torch.float64)).repeat(10)
    X[..., -1] = X[..., 0] + spread.unsqueeze(-1) * X[..., -1]
    y = X.sum(-1) + noise.unsqueeze(-1) * torch.randn(B, m, generator=g, dtype=torch.float64)
    Z = torch.cat([X, y.unsqueeze(-1)], -1)
    Z = Z - Z.mean(-2, keepdim=True)
    gram = Z.mT @ Z
    n = torch.full((B,), float(m), dtype=torch.float64)
    with monkeypatch.context() as native:  # the rule lives in the kernel (ols.c)
        native.delenv("LOSSFN_NATIVE", raising=False)
        _, again = ols_record(gram, Z.new_zeros(B, d + 1), n, intercept=True,
                              dtype=torch.float64, data_eps=2.0**-52, one_pass_error=ONE_PASS_ERROR)
    once = ~again
    assert 4 <= once.sum() <= B - 4  # both kinds are there
    rng = np.random.default_rng(0)
    z, w = rng.standard_normal(100), rng.standard_normal(100)
    near = (np.stack([z, z + 0.032 * w], 1), w + 0.0175 * rng.standard_normal(100))
    weak = (rng.standard_normal((100, 2)), rng.standard_normal(100))
    tiny = rng.standard_normal((50, 2))
    tiny_y = tiny @ np.array([1.0, -2.0]) + 0.3 * rng.standard_normal(50)
    tiny[:, 0] *= 1e-160
    cases = [(X[b].numpy(), y[b].numpy()) for b in range(B) if once[b]] + [near, weak, (tiny, tiny_y)]
    for Xc, yc in cases:
        res = fit.ols(torch.tensor(Xc), torch.tensor(yc))
        coef, se, sigma2 = _mp_least_squares(Xc, yc)
        assert res.ok
        ours = np.r_[res.intercept.item(), res.slope.numpy()]
        assert _relative(ours[1:] * np.abs(Xc).max(0), coef[1:] * np.abs(Xc).max(0)) <= 1e-12
        assert _relative(res.stderr.numpy()[1:] * np.abs(Xc).max(0), se[1:] * np.abs(Xc).max(0)) <= 1e-12
        assert res.sigma2.item() == pytest.approx(sigma2, rel=1e-12)


def test_ill_conditioned_datasets_get_the_second_pass(monkeypatch, route):
    # A batch of well-conditioned datasets with two that are not (nearly
    # collinear columns; a nearly exact fit): on the native route only those
    # two are read again, and every dataset matches statsmodels (pinv).
    import lossfn.fit._ols

    g = torch.Generator().manual_seed(22)
    X = torch.randn(8, 60, 3, generator=g, dtype=torch.float64)
    y = 1 + X.sum(-1) + torch.randn(8, 60, generator=g, dtype=torch.float64)
    X[2, :, 2] = X[2, :, 1] + 1e-6 * torch.randn(60, generator=g, dtype=torch.float64)
    y[5] = 1 + X[5].sum(-1) + 1e-9 * torch.randn(60, generator=g, dtype=torch.float64)
    passes = []
    for name in ("ols_fit", "centred_gram"):  # the first pass, then the second
        real = getattr(lossfn.fit._ols, name)
        monkeypatch.setattr(lossfn.fit._ols, name,
                            lambda x, *a, _real=real, **k: passes.append(x.shape[0]) or _real(x, *a, **k))
    res = fit.ols(X, y)
    if route == "native":
        assert passes == [8, 2]
    assert res.ok.all()
    for b in range(8):
        ref = sm.OLS(y[b].numpy(), sm.add_constant(X[b].numpy())).fit()
        params = np.r_[res.intercept[b].item(), res.slope[b].numpy()]
        tol = 1e-6 if b == 2 else 1e-11  # κ ≈ 1e6 in dataset 2: QR-class is 1e-10
        np.testing.assert_allclose(params, ref.params, rtol=tol, atol=tol)
        np.testing.assert_allclose(res.stderr[b].numpy(), ref.bse, rtol=1e-6 if b == 5 else 1e-9)
        assert res.sigma2[b].item() == pytest.approx(ref.ssr / 60, rel=1e-6 if b == 5 else 1e-10)


def test_several_predictors_at_an_offset_of_5e10_spreads_keep_their_digits(route):
    # The torch route once left the first-pass mean's rounding in float64 (its
    # effect is of second order, (eps·offset/spread)², which is 1e-10 here):
    # coefficients off by 6e-11. Oracle: 40-digit least squares.
    rng = np.random.default_rng(1)
    X = rng.standard_normal((52, 6)) + 5e10
    y = X @ rng.standard_normal(6) + rng.standard_normal(52)
    mask = rng.random(52) < 0.8
    coef, se, sigma2 = _mp_least_squares(X[mask], y[mask])
    res = fit.ols(torch.tensor(X), torch.tensor(y), mask=torch.tensor(mask))
    assert res.ok
    assert _relative(res.slope.numpy(), coef[1:]) <= 1e-12
    assert _relative(res.stderr.numpy()[1:], se[1:]) <= 1e-10
