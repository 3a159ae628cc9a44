"""fit.standardized against numpy/scipy moments and the OLS slope."""

from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.stats
import torch

import lossfn
from lossfn import fit
from routes import route  # noqa: F401 (an autouse fixture: every test on both routes)


def _data(seed, batch=6, m=30, dtype=torch.float64):
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, m, generator=gen, dtype=dtype) * 2 + 40
    y = 3 - 0.7 * x + torch.randn(batch, m, generator=gen, dtype=dtype)
    return x, y


def test_against_numpy_and_scipy():
    x, y = _data(0)
    s = fit.standardized(x, y)
    for k in range(x.shape[0]):
        xn, yn = x[k].numpy(), y[k].numpy()
        assert s.mean_x[k].item() == pytest.approx(xn.mean(), rel=1e-14)
        assert s.mean_y[k].item() == pytest.approx(yn.mean(), rel=1e-14)
        assert s.std_x[k].item() == pytest.approx(xn.std(ddof=0), rel=1e-12)
        assert s.std_y[k].item() == pytest.approx(yn.std(ddof=0), rel=1e-12)
        assert s.rho[k].item() == pytest.approx(scipy.stats.pearsonr(xn, yn).statistic, rel=1e-12)
    assert s.ok.all() and s.n.tolist() == [30] * 6


def test_standardized_slope_is_the_ols_slope():
    x, y = _data(1)
    s, line = fit.standardized(x, y), fit.ols(x, y)
    torch.testing.assert_close(s.rho * s.std_y / s.std_x, line.slope, rtol=1e-12, atol=0)
    torch.testing.assert_close(s.mean_y - line.slope * s.mean_x, line.intercept, rtol=1e-10, atol=0)
    for k in range(x.shape[0]):
        ref = scipy.stats.linregress(x[k].numpy(), y[k].numpy())
        assert (s.rho[k] * s.std_y[k] / s.std_x[k]).item() == pytest.approx(ref.slope, rel=1e-12)


def test_padded_equals_trimmed_and_garbage_is_ignored():
    x, y = _data(2, batch=3, m=20)
    lengths = [20, 4, 11]
    mask = torch.arange(20) < torch.tensor(lengths).unsqueeze(-1)
    s = fit.standardized(torch.where(mask, x, math.nan), torch.where(mask, y, 1e30), mask=mask)
    for k, length in enumerate(lengths):
        alone = fit.standardized(x[k, :length], y[k, :length])
        for field, value in zip(s._fields, s):
            torch.testing.assert_close(value[k], getattr(alone, field), rtol=1e-12, atol=0)


def test_degenerate_rows_are_flagged():
    x, y = _data(3, batch=4, m=10)
    x[1] = 7.3  # constant x
    y[2] = -1.1  # constant y
    mask = torch.ones(4, 10, dtype=torch.bool)
    mask[3] = False
    s = fit.standardized(x, y, mask=mask)
    assert s.ok.tolist() == [True, False, False, False]
    assert torch.isnan(s.rho[1:]).all() and torch.isnan(s.std_x[1:]).all()
    assert s.rho[0].item() == pytest.approx(np.corrcoef(x[0].numpy(), y[0].numpy())[0, 1])


def test_float32_with_offset():
    gen = torch.Generator().manual_seed(4)
    x = (1e4 + torch.rand(2000, generator=gen, dtype=torch.float64)).float()
    y = (5e3 + x.double() + 0.2 * torch.randn(2000, generator=gen, dtype=torch.float64)).float()
    s = fit.standardized(x, y)
    ref = scipy.stats.pearsonr(x.double().numpy(), y.double().numpy()).statistic
    assert s.rho.item() == pytest.approx(ref, rel=1e-4)
    assert s.std_x.item() == pytest.approx(x.double().numpy().std(), rel=1e-4)


def test_vmap_equals_batched():
    x, y = _data(5, batch=4, m=12)
    mask = torch.rand(4, 12, generator=torch.Generator().manual_seed(0)) < 0.8
    batched = fit.standardized(x, y, mask=mask)
    mapped = torch.func.vmap(lambda a, b, c: fit.standardized(a, b, mask=c))(x, y, mask)
    for field, a, b in zip(batched._fields, batched, mapped):
        torch.testing.assert_close(a, b, rtol=1e-13, atol=0, msg=field)


def test_several_predictors_are_refused():
    with pytest.raises(ValueError, match="one predictor"):
        fit.standardized(torch.zeros(5, 2), torch.zeros(5))
    with pytest.raises(lossfn.ShapeError):
        fit.standardized(torch.zeros(5), torch.zeros(6))
