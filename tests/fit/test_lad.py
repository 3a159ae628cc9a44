"""lossfn.fit.lad against the LP optimum (scipy HiGHS), an independent subgradient
check, and the Laplace location/scale MLE against scipy.stats.laplace.fit."""

import math
import numpy as np
import pytest
import torch
from scipy import stats
from scipy.optimize import linprog

import lossfn
from lossfn import ShapeError
from lossfn.fit import LADFit, lad
from lossfn.location import laplace_fit
from routes import route  # noqa: F401 (autouse: every test on the native and the torch route)

F64 = torch.float64


def _design(x, intercept=True):
    x = np.asarray(x, dtype=float)
    x = x[:, None] if x.ndim == 1 else x
    return np.hstack([np.ones((len(x), 1)), x]) if intercept else x


def lp_objective(x, y, intercept=True):
    """min Σ|y − Aβ| as an LP solved by HiGHS at unit scale, scaled back.

    HiGHS's tolerances are absolute, so y is first divided by its spread; the
    objective is re-evaluated exactly from the LP's coefficients.
    """
    A = _design(x, intercept)
    y = np.asarray(y, dtype=float)
    c = np.abs(y).mean() or 1.0
    m, p = A.shape
    res = linprog(
        np.r_[np.zeros(p), np.ones(2 * m)],
        A_eq=np.hstack([A, np.eye(m), -np.eye(m)]),
        b_eq=y / c,
        bounds=[(None, None)] * p + [(0, None)] * (2 * m),
        method="highs",
    )
    assert res.status == 0
    return np.abs(y / c - A @ res.x[:p]).sum() * c


def subgradient_holds(x, y, intercept_, slope, intercept=True, tol=1e-9):
    """0 ∈ ∂Σ|rᵢ|: some uᵢ ∈ [−1, 1] on the zero residuals balance the rest (an LP)."""
    A = _design(x, intercept)
    beta = np.r_[intercept_, np.atleast_1d(slope)] if intercept else np.atleast_1d(slope)
    r = np.asarray(y, dtype=float) - A @ beta
    zero = np.abs(r) <= tol * (np.abs(y).max() + 1e-300)
    target = -(np.sign(r[~zero])[:, None] * A[~zero]).sum(0)
    k = int(zero.sum())
    if k == 0:
        return np.allclose(target, 0, atol=1e-9 * len(y))
    # Find u in [-1, 1]^k with A_zᵀ u = target, allowing slack e (minimized).
    Az = A[zero].T
    p = Az.shape[0]
    res = linprog(
        np.r_[np.zeros(k), np.ones(2 * p)],
        A_eq=np.hstack([Az, np.eye(p), -np.eye(p)]),
        b_eq=target,
        bounds=[(-1, 1)] * k + [(0, None)] * (2 * p),
        method="highs",
    )
    return res.status == 0 and res.fun <= 1e-7 * len(y)


def _data(kind, B, m, d, seed):
    g = torch.Generator().manual_seed(seed)
    X = torch.randn(B, m, d, generator=g, dtype=F64)
    beta = torch.randn(B, d, generator=g, dtype=F64)
    y = 3.0 + (X * beta.unsqueeze(-2)).sum(-1)
    if kind == "gaussian":
        return X, y + torch.randn(B, m, generator=g, dtype=F64)
    if kind == "heavy":  # Student t with 1.5 degrees of freedom
        z = torch.randn(B, m, generator=g, dtype=F64)
        # torch.distributions draws from the global generator: seed it, in a
        # fork that leaves the caller's state alone, so every run sees the same data.
        with torch.random.fork_rng():
            torch.manual_seed(seed)
            chi = torch.distributions.Chi2(1.5).sample((B, m)).to(F64)
        return X, y + z / (chi / 1.5).sqrt()
    # contaminated: 20% gross outliers in y, some at high-leverage x
    noise = torch.randn(B, m, generator=g, dtype=F64)
    bad = torch.rand(B, m, generator=g, dtype=F64) < 0.2
    X = torch.where(bad.unsqueeze(-1) & (torch.rand(B, m, 1, generator=g, dtype=F64) < 0.5), X * 10, X)
    return X, y + noise + bad * 50 * torch.randn(B, m, generator=g, dtype=F64)


@pytest.mark.parametrize("kind", ["gaussian", "heavy", "contaminated"])
@pytest.mark.parametrize("d", [1, 3, 10])
@pytest.mark.parametrize("scale", [1e-6, 1.0, 1e6])
def test_objective_equals_lp_optimum(kind, d, scale):
    B, m = 4, 40
    X, y = _data(kind, B, m, d, seed=d)
    y = y * scale
    fit = lad(X, y)
    assert fit.ok.all()
    for b in range(B):
        ref = lp_objective(X[b].numpy(), y[b].numpy())
        assert abs(fit.objective[b].item() - ref) <= 1e-9 * ref
        # The objective field is the objective of the returned line.
        A = _design(X[b].numpy())
        beta = np.r_[fit.intercept[b].item(), fit.slope[b].numpy()]
        assert np.abs(y[b].numpy() - A @ beta).sum() == pytest.approx(ref, rel=1e-9)
        assert subgradient_holds(X[b].numpy(), y[b].numpy(), fit.intercept[b].item(),
                                 fit.slope[b].numpy())


def test_simple_regression_shapes_and_lp():
    X, y = _data("heavy", 6, 30, 1, seed=7)
    fit = lad(X[..., 0], y)
    assert fit.slope.shape == (6,) and fit.intercept.shape == (6,)
    multi = lad(X, y)
    assert multi.slope.shape == (6, 1)
    torch.testing.assert_close(fit.objective, multi.objective, rtol=1e-12, atol=0)
    for b in range(6):
        ref = lp_objective(X[b, :, 0].numpy(), y[b].numpy())
        assert fit.objective[b].item() == pytest.approx(ref, rel=1e-9)


def test_non_unique_optimum():
    # Every line through the strip between the two pairs is optimal: Σ|r| = 2.
    x = torch.tensor([0.0, 1.0, 2.0, 3.0], dtype=F64)
    y = torch.tensor([0.0, 1.0, 1.0, 0.0], dtype=F64)
    fit = lad(x, y)
    assert fit.ok
    assert fit.objective.item() == pytest.approx(2.0, rel=1e-12)
    assert lp_objective(x.numpy(), y.numpy()) == pytest.approx(2.0, rel=1e-12)
    assert subgradient_holds(x.numpy(), y.numpy(), fit.intercept.item(), fit.slope.item())


def test_degenerate_vertices_integer_data():
    # Integer data on a grid: many exactly collinear triples, ties in x and y.
    g = torch.Generator().manual_seed(3)
    x = torch.randint(0, 4, (8, 25), generator=g).to(F64)
    y = (x + torch.randint(-2, 3, (8, 25), generator=g)).to(F64)
    fit = lad(x, y)
    assert fit.ok.all()
    for b in range(8):
        ref = lp_objective(x[b].numpy(), y[b].numpy())
        assert fit.objective[b].item() == pytest.approx(ref, rel=1e-12, abs=1e-12)


def test_collinear_equally_spaced_points():
    # Points 1, 3, 5 lie on y = -1 at equally spaced x: a perturbation that is
    # linear in the point index (a Weyl sequence) keeps them collinear, and the
    # walk then cycles between objectives 3.0 and 3.5. The optimum is 3.
    x = torch.tensor([-1.0, -1.0, -1.0, 0.0, -1.0, 1.0], dtype=F64)
    y = torch.tensor([-2.0, -1.0, -2.0, -1.0, 0.0, -1.0], dtype=F64)
    fit = lad(x, y)
    assert fit.ok
    assert fit.objective.item() == pytest.approx(3.0, rel=1e-12)
    assert lp_objective(x.numpy(), y.numpy()) == pytest.approx(3.0, rel=1e-12)


def test_through_origin():
    X, y = _data("heavy", 3, 30, 2, seed=11)
    fit = lad(X, y, intercept=False)
    assert (fit.intercept == 0).all() and fit.ok.all()
    for b in range(3):
        ref = lp_objective(X[b].numpy(), y[b].numpy(), intercept=False)
        assert fit.objective[b].item() == pytest.approx(ref, rel=1e-9)


def test_ragged_masks_match_truncated_datasets():
    X, y = _data("contaminated", 5, 30, 2, seed=5)
    lengths = torch.tensor([30, 21, 9, 4, 3])
    mask = torch.arange(30) < lengths.unsqueeze(-1)
    # Values behind the mask are never read.
    Xn = torch.where(mask.unsqueeze(-1), X, torch.nan)
    yn = torch.where(mask, y, torch.inf)
    fit = lad(Xn, yn, mask=mask)
    assert fit.ok.all()
    for b, n in enumerate(lengths.tolist()):
        ref = lp_objective(X[b, :n].numpy(), y[b, :n].numpy())
        assert fit.objective[b].item() == pytest.approx(ref, rel=1e-9, abs=1e-12)
        alone = lad(X[b, :n], y[b, :n])
        assert fit.objective[b].item() == pytest.approx(alone.objective.item(), rel=1e-9, abs=1e-12)


def test_degenerate_datasets_do_not_poison_the_batch():
    X, y = _data("heavy", 5, 12, 1, seed=2)
    x = X[..., 0].clone()
    x[1] = 4.0  # constant x
    mask = torch.ones(5, 12, dtype=torch.bool)
    mask[2, 1:] = False  # one point for two coefficients
    mask[3] = False  # nothing at all
    fit = lad(x, y, mask=mask)
    assert fit.ok.tolist() == [True, False, False, False, True]
    for b in (1, 2, 3):
        assert torch.isnan(fit.slope[b]) and torch.isnan(fit.intercept[b])
        assert torch.isnan(fit.objective[b])
    for b in (0, 4):
        ref = lp_objective(x[b].numpy(), y[b].numpy())
        assert fit.objective[b].item() == pytest.approx(ref, rel=1e-9)


def test_vmap_equals_batched_call():
    X, y = _data("heavy", 6, 25, 3, seed=8)
    batched = lad(X, y)
    mapped = torch.func.vmap(lad)(X, y)
    assert isinstance(mapped, LADFit)
    for a, b in zip(batched, mapped):
        torch.testing.assert_close(a, b)
    mask = torch.arange(25) < torch.tensor([25, 20, 12, 9, 7, 4]).unsqueeze(-1)
    masked = torch.func.vmap(lambda x, y, m: lad(x, y, mask=m))(X, y, mask)
    torch.testing.assert_close(masked.objective, lad(X, y, mask=mask).objective)


def test_float32_and_dtype_follow_inputs():
    X, y = _data("heavy", 4, 30, 2, seed=9)
    fit = lad(X.float(), y.float())
    assert fit.slope.dtype == torch.float32 and fit.objective.dtype == torch.float32
    assert fit.ok.all()
    for b in range(4):
        ref = lp_objective(X[b].numpy(), y[b].numpy())
        assert fit.objective[b].item() == pytest.approx(ref, rel=1e-5)


def test_iteration_cap_is_reported_not_silent():
    X, y = _data("contaminated", 8, 60, 5, seed=4)
    capped = lad(X, y, max_iter=0)
    full = lad(X, y)
    assert full.ok.all()
    # Without exchanges the start vertex is returned: an upper bound, flagged.
    assert (capped.objective >= full.objective * (1 - 1e-12)).all()
    assert (~capped.ok).any()
    assert torch.equal(capped.ok, capped.objective <= full.objective * (1 + 1e-12))


def test_shared_design_broadcasts_over_datasets():
    X, y = _data("heavy", 4, 20, 2, seed=13)
    shared = lad(X[:1], y)  # one design (1, m, d), four responses (4, m)
    expanded = lad(X[0].expand(4, 20, 2), y)
    torch.testing.assert_close(shared.objective, expanded.objective, rtol=1e-12, atol=0)
    assert shared.slope.shape == (4, 2)


def test_blocks_give_the_same_fits(monkeypatch):
    # On the CPU the batch runs in blocks of CPU_BLOCK datasets (for the cache);
    # a batch of shape (2, 4) in blocks of 3 must equal one call.
    import lossfn.fit._prepare as prepare_module

    X, y = _data("contaminated", 8, 20, 2, seed=14)
    X, y = X.reshape(2, 4, 20, 2), y.reshape(2, 4, 20)
    mask = torch.arange(20) < torch.arange(13, 21).reshape(2, 4, 1)
    whole = lad(X, y, mask=mask)
    monkeypatch.setattr(prepare_module, "CPU_BLOCK", 3)
    blocked = lad(X, y, mask=mask)
    for a, b in zip(whole, blocked):
        assert a.shape == b.shape
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)


def test_inputs_not_mutated():
    X, y = _data("heavy", 2, 10, 2, seed=1)
    mask = torch.ones(2, 10, dtype=torch.bool)
    copies = X.clone(), y.clone(), mask.clone()
    lad(X, y, mask=mask)
    assert torch.equal(X, copies[0]) and torch.equal(y, copies[1]) and torch.equal(mask, copies[2])


def test_bad_arguments_raise_clear_errors():
    x = torch.zeros(3, 10)
    with pytest.raises(ShapeError, match="lad: x and y must have the same number of points"):
        lad(x, torch.zeros(3, 9))
    with pytest.raises(ShapeError, match="lad: x must be"):
        lad(torch.zeros(2, 3, 4, 10), torch.zeros(10))
    with pytest.raises(TypeError, match="lad: x has dtype torch.int64"):
        lad(torch.zeros(10, dtype=torch.long), torch.zeros(10))
    with pytest.raises(TypeError, match="one precision"):
        lad(torch.zeros(10), torch.zeros(10, dtype=F64))
    with pytest.raises(TypeError, match="lad: mask must be a bool tensor"):
        lad(x, torch.zeros(3, 10), mask=torch.ones(3, 10))
    with pytest.raises(ShapeError, match="mask of shape"):
        lad(x, torch.zeros(3, 10), mask=torch.ones(4, 10, dtype=torch.bool))


# Laplace location and scale (the noise model behind LAD) against scipy.


@pytest.mark.parametrize("m", [7, 8, 101])
def test_laplace_fit_matches_scipy(m):
    g = torch.Generator().manual_seed(m)
    samples = lossfn.Laplace(2.0).sample((3, m), generator=g, dtype=F64) + 5.0
    ours = laplace_fit(samples)
    model = lossfn.Laplace(1.0).fit(samples)
    for b in range(3):
        loc, scale = stats.laplace.fit(samples[b].numpy())
        assert ours.location[b].item() == pytest.approx(loc, rel=1e-12)
        assert ours.scale[b].item() == pytest.approx(scale, rel=1e-12)
        assert model.location[b].item() == pytest.approx(loc, rel=1e-12)
        assert model.scale[b].item() == pytest.approx(scale, rel=1e-12)


def test_laplace_scale_is_lad_objective_over_m():
    # A single column of ones, no intercept, is the location problem: the LAD
    # coefficient is the median (unique for odd m) and objective / m is b̂.
    g = torch.Generator().manual_seed(0)
    samples = torch.randn(4, 15, generator=g, dtype=F64)
    ones = torch.ones(4, 15, 1, dtype=F64)
    fit = lad(ones, samples, intercept=False)
    ref = laplace_fit(samples)
    torch.testing.assert_close(fit.slope[..., 0], ref.location, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(fit.objective / 15, ref.scale, rtol=1e-12, atol=0)


def test_non_finite_present_points_give_nan_and_not_ok():
    gen = torch.Generator().manual_seed(21)
    x = torch.randn(4, 20, generator=gen, dtype=torch.float64)
    y = 2 * x + torch.randn(4, 20, generator=gen, dtype=torch.float64)
    y[0, 2], y[1, 3] = math.nan, math.inf
    X = torch.randn(4, 20, 3, generator=gen, dtype=torch.float64)
    for design in (x, X):
        out = lad(design, y)
        assert out.ok.tolist() == [False, False, True, True]
        assert torch.isnan(out.objective[:2]).all() and torch.isnan(out.intercept[:2]).all()
        alone = lad(design[2:], y[2:])
        torch.testing.assert_close(out.objective[2:], alone.objective)


def test_options_are_validated():
    x = torch.arange(5.0, dtype=torch.float64)
    with pytest.raises(TypeError, match="intercept must be True or False"):
        lad(x, x, intercept="yes")
    with pytest.raises(ValueError, match="max_iter"):
        lad(x, x, max_iter=-1)


def test_all_fits_share_one_rank_rule():
    # x varies only in its last float32 bit: rounding noise, not a design.
    x = torch.tensor([[3.0000002] + [3.0] * 9, [float(i) for i in range(10)]])
    wiggle = torch.tensor([0.3, -0.2, 0.1, -0.4, 0.2, 0.0, -0.1, 0.4, -0.3, 0.1])
    y = (torch.arange(10.0) + wiggle).expand(2, 10)  # not a perfect fit: Huber needs a scale
    from lossfn.fit import huber, ols
    for fit in (ols(x, y), lad(x, y), huber(x, y)):
        assert fit.ok.tolist() == [False, True]
        assert torch.isnan(fit.slope[0]) and fit.slope[1].item() == pytest.approx(1.0, abs=0.1)


@pytest.mark.parametrize("m", [40, 129, 200, 203])
def test_nearest_crossings_equal_topk(m):
    # The two-level selection of the line search against torch.topk, ties included.
    from lossfn.fit._lad import _nearest

    g = torch.Generator().manual_seed(m)
    rate = torch.randn(50, m, generator=g, dtype=torch.float64)
    rate[:10] = rate[:10].round()  # many ties
    values, index = _nearest(rate, 4)
    expected = rate.clamp(min=0).topk(4, dim=-1).values
    assert torch.equal(values, expected)
    assert torch.equal(rate.clamp(min=0).gather(-1, index), values)
    assert all(len(set(row)) == 4 for row in index.tolist()) and (index < m).all()


@pytest.mark.parametrize("scale_x, scale_y", [(1e-25, 1e-30), (1e25, 1e20), (1e20, 1.0)])
def test_float32_at_scales_whose_squares_leave_float32(scale_x, scale_y):
    # The columns' root mean square once squared 1e25 (inf) or 1e-25 (0) in
    # float32 and every fit came back not ok. Oracle: the LP on the same float32
    # data brought to unit scale in float64, its optimum scaled back.
    gen = torch.Generator().manual_seed(31)
    x = torch.randn(3, 40, generator=gen, dtype=torch.float64)
    y = 1 + 2 * x + torch.randn(3, 40, generator=gen, dtype=torch.float64) ** 3
    x32, y32 = (x * scale_x).float(), (y * scale_y).float()
    fit = lad(x32, y32)
    assert fit.ok.all() and fit.slope.dtype == torch.float32
    for b in range(3):
        xs, ys = x32[b].double().numpy() / scale_x, y32[b].double().numpy() / scale_y
        optimum = lp_objective(xs, ys)
        ours = np.abs(ys - fit.intercept[b].item() / scale_y
                      - fit.slope[b].item() * scale_x / scale_y * xs).sum()
        assert ours == pytest.approx(optimum, rel=1e-5)


def test_default_cap_covers_degenerate_walks_at_large_m(route):
    # Integer responses on an equally spaced design: degenerate vertices need
    # about m/15 exchanges (67 at m = 1000); the default cap was once 24 there
    # on both routes and left 27 of 64 such fits not ok. The native route's
    # default covers them; the torch route, which runs its cap in lockstep for
    # every dataset, keeps the tighter one, and its fits that stop short are
    # flagged. Oracle: the linear programme.
    g = torch.Generator().manual_seed(1)
    x = torch.arange(1000, dtype=torch.float64).expand(16, 1000)
    y = torch.randint(0, 4, (16, 1000), generator=g).double()
    fit = lad(x, y)
    if route == "torch":
        assert not fit.ok.all()
        fit = lad(x, y, max_iter=150)
    assert fit.ok.all()
    for b in range(2):
        A = np.c_[np.ones(1000), x[b].numpy()] / 1000.0  # unit scale for HiGHS
        res = linprog(np.r_[0, 0, np.ones(2000)], A_eq=np.hstack([A, np.eye(1000), -np.eye(1000)]),
                      b_eq=y[b].numpy(), bounds=[(None, None)] * 2 + [(0, None)] * 2000, method="highs")
        assert fit.objective[b].item() == pytest.approx(res.fun, rel=1e-9)
