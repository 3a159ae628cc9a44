"""lossfn._native.ols_record (``ols.c``): the record of ``fit.ols`` with several
predictors from the native Gram matrices, eight datasets to a vector, against
statsmodels OLS dataset by dataset and against the pure-torch route's rules
for degenerate datasets (nan fields, ok=False)."""

from __future__ import annotations

import numpy as np
import pytest
import statsmodels.api as sm
import torch

import lossfn._native as native
from lossfn import fit


@pytest.fixture(autouse=True)
def native_on(monkeypatch):
    monkeypatch.delenv("LOSSFN_NATIVE", raising=False)
    assert native.available(), "the native kernels did not build (see the warning)"


def _torch_route(monkeypatch, *args, **kwargs):
    with monkeypatch.context() as route:
        route.setenv("LOSSFN_NATIVE", "0")
        return fit.ols(*args, **kwargs)


def _batch(dtype, d, B=21, m=40, seed=0):
    """Random datasets of different scales, with degenerate ones among them:
    B = 21 fills two groups of eight lanes and part of a third."""
    g = torch.Generator().manual_seed(seed)
    X = torch.randn(B, m, d, generator=g, dtype=torch.float64)
    X = X * 10.0 ** torch.randint(-3, 4, (B, 1, d), generator=g) + torch.randn(B, 1, d, generator=g)
    y = 2 + X.sum(-1) * 0.7 + torch.randn(B, m, generator=g, dtype=torch.float64)
    mask = torch.rand(B, m, generator=g) < 0.9
    mask[:, : d + 3] = True
    X[3, :, 0] = 5.0  # a constant column
    mask[5] = False  # no points
    mask[7] = False
    mask[7, :d] = True  # fewer points than parameters
    X[9, 4, 0] = torch.nan  # nan in a present point
    X[11, :, -1] = 3 * X[11, :, 0]  # collinear columns (the same column when d = 1)
    y[13] = 1 + X[13].sum(-1)  # an exact fit
    y[15] = 4.0  # a constant response
    X[17, 6, 0], mask[17, 6] = 1e30, False  # garbage at an absent point
    return X.to(dtype), y.to(dtype), mask


@pytest.mark.parametrize("intercept", [True, False])
@pytest.mark.parametrize("d", [1, 3, 8, 9])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_record_matches_statsmodels_and_the_torch_routes_rules(monkeypatch, dtype, d, intercept):
    X, y, mask = _batch(dtype, d)
    ours = fit.ols(X, y, mask=mask, intercept=intercept)
    theirs = _torch_route(monkeypatch, X, y, mask=mask, intercept=intercept)
    # Degenerate datasets fail on both routes, in every field.
    np.testing.assert_array_equal(ours.ok.numpy(), theirs.ok.numpy())
    # A constant column is collinear with the intercept only; d points are
    # too few with an intercept, and an exact fit without.
    bad = {5, 9} | ({3, 7} if intercept else set()) | ({11} if d > 1 else set())
    assert not ours.ok[sorted(bad)].any()
    assert ours.ok.sum() >= 21 - len(bad)
    np.testing.assert_array_equal(ours.n.numpy(), mask.sum(-1).numpy())
    for field in ("intercept", "slope", "sigma2", "stderr", "r2"):
        value = getattr(ours, field)
        assert value.dtype == dtype
        assert torch.isnan(value[~ours.ok]).all()
    rtol = 2e-4 if dtype == torch.float32 else 1e-9
    for b in range(21):
        if not ours.ok[b]:
            continue
        keep = mask[b].numpy()
        Xb, yb = X[b].double().numpy()[keep], y[b].double().numpy()[keep]
        with np.errstate(divide="ignore", invalid="ignore"):  # n = p: no standard errors
            ref = sm.OLS(yb, sm.add_constant(Xb, has_constant="add") if intercept else Xb).fit()
            bse = ref.bse
        params = np.r_[ours.intercept[b].item(), ours.slope[b].double().numpy()] if intercept \
            else ours.slope[b].double().numpy()
        if b == 13 and intercept:  # exact: the residual is rounding noise
            np.testing.assert_allclose(params, ref.params, rtol=rtol, atol=rtol)
            assert ours.sigma2[b].item() <= 1e-20 * (yb @ yb) or dtype == torch.float32
            continue
        if b == 15 and intercept:  # a constant response: a flat plane, exactly (exact arithmetic)
            assert params[0] == 4 and (params[1:] == 0).all() and ours.sigma2[b] == 0
            continue
        # coefficients near 0 to their standard error
        scale = np.abs(ref.params) + np.nan_to_num(bse, nan=0, posinf=0)
        assert (np.abs(params - ref.params) <= rtol * scale).all(), (b, params, ref.params)
        if b == 7:  # n = p: no degree of freedom left for the standard errors
            assert torch.isnan(ours.stderr[b]).all()
            continue
        # SSR = |b|^2 - |Q^T b|^2 in float64 keeps eps64 |b|^2/SSR relative (the
        # documented one-pass bound): below float32 data's own resolution, but
        # more than rtol for a fit to a few ulps of float32 (dataset 13, no intercept).
        total = ((yb - yb.mean()) ** 2).sum() if intercept else yb @ yb
        ssr_tol = rtol + 10 * np.finfo(np.float64).eps * total / ref.ssr
        np.testing.assert_allclose(ours.stderr[b].double().numpy(), bse, rtol=ssr_tol)
        assert ours.sigma2[b].item() == pytest.approx(ref.ssr / keep.sum(), rel=ssr_tol)
        # Uncentred without an intercept (as NIST); statsmodels centres it where a
        # column is constant.
        r2 = ref.rsquared if intercept else 1 - ref.ssr / (yb @ yb)
        assert ours.r2[b].item() == pytest.approx(r2, rel=rtol, abs=rtol)


def test_the_largest_design_the_kernels_take():
    # k = d + 1 = 64 columns (KMAX): against statsmodels; one more goes to the torch route.
    g = torch.Generator().manual_seed(3)
    d = native.MAX_COLUMNS - 1
    X = torch.randn(3, 300, d, generator=g, dtype=torch.float64)
    y = X @ torch.linspace(-1, 1, d, dtype=torch.float64) + torch.randn(3, 300, generator=g,
                                                                         dtype=torch.float64)
    res = fit.ols(X, y)
    assert res.ok.all()
    for b in range(3):
        ref = sm.OLS(y[b].numpy(), sm.add_constant(X[b].numpy())).fit()
        np.testing.assert_allclose(np.r_[res.intercept[b].item(), res.slope[b].numpy()], ref.params,
                                   rtol=1e-9, atol=1e-11)
        np.testing.assert_allclose(res.stderr[b].numpy(), ref.bse, rtol=1e-9)
    gram, means = native.centred_gram(X, y, None)[::-1]
    assert native.ols_record(torch.zeros(2, 65, 65, dtype=torch.float64),
                             torch.zeros(2, 65, dtype=torch.float64), torch.ones(2),
                             intercept=True, dtype=torch.float64, data_eps=1e-16,
                             one_pass_error=None) is None
    assert native.ols_record(gram, means, torch.full((3,), 300.0), intercept=True,
                             dtype=torch.float64, data_eps=1e-16, one_pass_error=None) is not None


@pytest.mark.parametrize("batch", [(), (1,), (2, 3, 4)])
def test_batch_shapes_and_threads_give_the_same_bits(batch):
    g = torch.Generator().manual_seed(4)
    X = torch.randn(batch + (50, 4), generator=g, dtype=torch.float64)
    y = X.sum(-1) + torch.randn(batch + (50,), generator=g, dtype=torch.float64)
    res = fit.ols(X, y)
    assert res.slope.shape == batch + (4,) and res.stderr.shape == batch + (5,)
    assert res.intercept.shape == res.ok.shape == res.n.shape == batch
    flat = fit.ols(X.reshape(-1, 50, 4), y.reshape(-1, 50))
    for mine, whole in zip(res, flat):
        torch.testing.assert_close(mine.reshape(whole.shape), whole, rtol=0, atol=0)


def test_threads_give_the_same_bits():
    g = torch.Generator().manual_seed(5)
    X = torch.randn(3001, 30, 6, generator=g)
    y = X.sum(-1) + torch.randn(3001, 30, generator=g)
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one = fit.ols(X, y)
        torch.set_num_threads(4)
        many = fit.ols(X, y)
    finally:
        torch.set_num_threads(before)
    for a, b in zip(one, many):
        torch.testing.assert_close(a, b, rtol=0, atol=0, equal_nan=True)


def test_one_pass_and_two_pass_datasets_in_one_batch_each_match_statsmodels():
    # float64: well-conditioned datasets keep their one-pass records; the
    # Longley-like ones (columns 1e-7 apart) are flagged and solved by
    # CholeskyQR2, and their records written into the same batch.
    g = torch.Generator().manual_seed(6)
    X = torch.randn(19, 60, 3, generator=g, dtype=torch.float64)
    y = 1 + X.sum(-1) + torch.randn(19, 60, generator=g, dtype=torch.float64)
    hard = [0, 8, 18]
    X[hard, :, 2] = X[hard, :, 1] + 1e-7 * torch.randn(3, 60, generator=g, dtype=torch.float64)
    gram, means = native.centred_gram(X, y, None)[::-1]
    _, again = native.ols_record(gram, means, torch.full((19,), 60.0), intercept=True,
                                 dtype=torch.float64, data_eps=2.0**-52, one_pass_error=2.0**-42)
    assert again.nonzero().flatten().tolist() == hard
    res = fit.ols(X, y)
    assert res.ok.all()
    for b in range(19):
        ref = sm.OLS(y[b].numpy(), sm.add_constant(X[b].numpy())).fit()
        tol = 1e-7 if b in hard else 1e-11  # κ ≈ 1e7: QR-class is 1e-9
        np.testing.assert_allclose(np.r_[res.intercept[b].item(), res.slope[b].numpy()], ref.params,
                                   rtol=tol, atol=tol)
        np.testing.assert_allclose(res.stderr[b].numpy(), ref.bse, rtol=1e-7 if b in hard else 1e-10)


def _mp_fit(X: np.ndarray, y: np.ndarray):
    """sigma2 and the standard errors of least squares with an intercept, in 50 digits."""
    import mpmath

    with mpmath.workdps(50):
        m, d = X.shape
        A = mpmath.matrix([[1] + [mpmath.mpf(float(v)) for v in row] for row in X])
        b = mpmath.matrix([mpmath.mpf(float(v)) for v in y])
        inverse = mpmath.inverse(A.T * A)
        r = b - A * (inverse * (A.T * b))
        ssr = sum(v * v for v in r)
        se = [float(mpmath.sqrt(ssr / (m - d - 1) * inverse[j, j])) for j in range(d + 1)]
        return float(ssr / m), np.array(se)


@pytest.mark.parametrize("seed, pick, lever", [(5, 43, True), (3, 34, False)])
def test_one_pass_rule_counts_the_rounding_of_long_sums(seed, pick, lever):
    # A review found float64 datasets that one pass served with sigma2 off by
    # 1.4e-12 and 2.0e-12 (r2 = 0.998, d = 5, one chunk of 256 points; the
    # first with a leverage point first): SSR's bound lacked the sqrt(run)
    # of the Gram entries' rounding. Now they get the second pass; oracle:
    # 50-digit least squares.
    rng = np.random.default_rng(seed)
    B, m, d, eps, bound = 64, 256, 5, 2.0**-52, 2.0**-42
    X = rng.standard_normal((B, m, d))
    if lever:
        X[:, 0, :] *= 100
    beta = rng.standard_normal((B, d))
    beta /= np.linalg.norm(beta, axis=1, keepdims=True)
    f, e = np.einsum("bmd,bd->bm", X, beta), rng.standard_normal((B, m))
    rho2 = 2 * eps / bound * rng.uniform(1.0, 1.1, (B, 1))  # the old rule's edge
    if lever:
        fc, ec = f - f.mean(1, keepdims=True), e - e.mean(1, keepdims=True)
        y = f + np.sqrt(rho2 / (1 - rho2) * (fc**2).sum(1, keepdims=True)
                        / (ec**2).sum(1, keepdims=True)) * e
    else:
        y = f + np.sqrt(rho2 / (1 - rho2)) * e
    X, y = X[pick], y[pick]
    res = fit.ols(torch.tensor(X), torch.tensor(y))
    sigma2, se = _mp_fit(X, y)
    assert res.ok
    assert res.sigma2.item() == pytest.approx(sigma2, rel=1e-12)
    np.testing.assert_allclose(res.stderr.numpy(), se, rtol=1e-12)


def test_datasets_no_second_pass_can_rescue_are_not_sent_to_it(monkeypatch):
    # Too few points and nan at a present point fail either way: only the
    # ill-conditioned dataset is read again.
    import lossfn.fit._ols

    g = torch.Generator().manual_seed(7)
    X = torch.randn(6, 40, 3, generator=g, dtype=torch.float64)
    y = X.sum(-1) + torch.randn(6, 40, generator=g, dtype=torch.float64)
    mask = torch.ones(6, 40, dtype=torch.bool)
    mask[1, 3:] = False  # 3 points, 4 coefficients
    X[2, 5, 1] = torch.nan
    X[4, :, 2] = X[4, :, 1] + 1e-7 * torch.randn(40, generator=g, dtype=torch.float64)
    passes = []
    real = lossfn.fit._ols.centred_gram
    monkeypatch.setattr(lossfn.fit._ols, "centred_gram",
                        lambda x, *a, **k: passes.append(x.shape[0]) or real(x, *a, **k))
    res = fit.ols(X, y, mask=mask)
    assert passes == [1]
    assert res.ok.tolist() == [True, False, False, True, True, True]
    assert torch.isnan(res.slope[[1, 2]]).all()
