"""lossfn.fit.huber against statsmodels RLM and sklearn HuberRegressor, and Huber's
location M-estimate against statsmodels and a scipy root finder."""

import numpy as np
import pytest
import statsmodels.api as sm
import torch
from scipy.optimize import brentq
from scipy.stats import norm
from sklearn.linear_model import HuberRegressor
from statsmodels.robust.norms import HuberT, estimate_location
from statsmodels.robust.scale import mad

import lossfn
from lossfn import ShapeError
from lossfn.fit import HuberFit, huber
from lossfn.location import huber_location
from routes import route  # noqa: F401 (autouse: every test on the native and the torch route)

F64 = torch.float64


def _data(kind, B, m, d, seed):
    g = torch.Generator().manual_seed(seed)
    X = torch.randn(B, m, d, generator=g, dtype=F64)
    beta = torch.randn(B, d, generator=g, dtype=F64)
    y = 2.0 + (X * beta.unsqueeze(-2)).sum(-1)
    if kind == "heavy":  # Student t, 2 degrees of freedom
        z = torch.randn(B, m, generator=g, dtype=F64)
        # torch.distributions draws from the global generator: seed it, in a
        # fork that leaves the caller's state alone, so every run sees the same data.
        with torch.random.fork_rng():
            torch.manual_seed(seed)
            chi = torch.distributions.Chi2(2.0).sample((B, m)).to(F64)
        return X, y + z / (chi / 2).sqrt()
    noise = torch.randn(B, m, generator=g, dtype=F64)
    bad = torch.rand(B, m, generator=g, dtype=F64) < 0.15
    return X, y + noise + bad * 20 * torch.randn(B, m, generator=g, dtype=F64)


def _params(fit, b):
    return np.r_[fit.intercept[b].item(), np.atleast_1d(fit.slope[b].numpy())]


def _rlm(x, y, delta, **fit_kw):
    exog = sm.add_constant(np.asarray(x).reshape(len(y), -1), has_constant="add")
    return sm.RLM(np.asarray(y), exog, M=HuberT(t=delta)).fit(maxiter=2000, tol=1e-15, **fit_kw)


def _rel(a, b):
    return np.abs(np.asarray(a) - np.asarray(b)).max() / np.abs(np.asarray(b)).max()


@pytest.mark.parametrize("kind", ["heavy", "contaminated"])
@pytest.mark.parametrize("d", [1, 3])
def test_estimated_scale_matches_rlm_default(kind, d):
    X, y = _data(kind, 4, 50, d, seed=d)
    fit = huber(X, y, delta=1.345)
    assert fit.ok.all()
    for b in range(4):
        ref = _rlm(X[b].numpy(), y[b].numpy(), 1.345)
        assert _rel(_params(fit, b), ref.params) < 1e-6
        assert fit.scale[b].item() == pytest.approx(ref.scale, rel=1e-6)


def test_rlm_scale_rule_is_mad_about_zero():
    # At the fixed point the scale is median|r| / Φ⁻¹(3/4) of the fit's own
    # residuals, about 0 (statsmodels' mad(resid, center=0)), not about their median.
    X, y = _data("contaminated", 3, 41, 2, seed=3)
    fit = huber(X, y)
    for b in range(3):
        r = y[b].numpy() - np.c_[np.ones(41), X[b].numpy()] @ _params(fit, b)
        assert fit.scale[b].item() == pytest.approx(mad(r, center=0), rel=1e-9)


@pytest.mark.parametrize("delta", [0.5, 1.345, 3.0])
def test_fixed_scale_matches_rlm(delta):
    X, y = _data("heavy", 4, 50, 2, seed=11)
    s = torch.tensor([0.7, 1.0, 1.5, 3.0], dtype=F64)
    fit = huber(X, y, delta=delta, scale=s)
    assert fit.ok.all()
    torch.testing.assert_close(fit.scale, s)
    for b in range(4):
        ref = _rlm(X[b].numpy(), y[b].numpy(), delta, update_scale=False, start_scale=s[b].item())
        assert _rel(_params(fit, b), ref.params) < 1e-8


def test_matches_sklearn_given_its_scale():
    # HuberRegressor minimizes Σ (σ + σ·H_ε(rᵢ/σ)) jointly over (β, σ) with
    # H_ε = 2ρ_ε; at its σ̂ = scale_, its β̂ minimizes Σ ρ_ε(rᵢ/σ̂): our fit with
    # delta=ε and scale=σ̂ fixed. Its L-BFGS stops early, hence ~1e-4.
    X, y = _data("heavy", 4, 80, 3, seed=5)
    for b in range(4):
        ref = HuberRegressor(epsilon=1.35, alpha=0.0, max_iter=1000).fit(X[b].numpy(), y[b].numpy())
        fit = huber(X[b], y[b], delta=1.35, scale=ref.scale_)
        assert fit.ok
        ours = np.r_[fit.intercept.item(), fit.slope.numpy()]
        assert _rel(ours, np.r_[ref.intercept_, ref.coef_]) < 1e-4


@pytest.mark.parametrize("factor", [1e-6, 1e6])
def test_scale_equivariance_against_rlm_at_unit_scale(factor):
    X, y = _data("contaminated", 3, 40, 2, seed=2)
    fit = huber(X, y * factor)
    assert fit.ok.all()
    for b in range(3):
        ref = _rlm(X[b].numpy(), y[b].numpy(), 1.345)
        assert _rel(_params(fit, b), ref.params * factor) < 1e-6
        assert fit.scale[b].item() == pytest.approx(ref.scale * factor, rel=1e-6)


def test_simple_regression_and_delta_per_dataset():
    X, y = _data("heavy", 3, 30, 1, seed=4)
    delta = torch.tensor([0.8, 1.345, 2.5], dtype=F64)
    fit = huber(X[..., 0], y, delta=delta)
    assert fit.slope.shape == (3,)
    for b in range(3):
        ref = _rlm(X[b, :, 0].numpy(), y[b].numpy(), delta[b].item())
        assert _rel(_params(fit, b), ref.params) < 1e-6


def test_ragged_masks_match_truncated_datasets():
    X, y = _data("contaminated", 4, 40, 2, seed=6)
    lengths = torch.tensor([40, 25, 12, 7])
    mask = torch.arange(40) < lengths.unsqueeze(-1)
    fit = huber(torch.where(mask.unsqueeze(-1), X, torch.nan), torch.where(mask, y, torch.inf), mask=mask)
    assert fit.ok.all()
    for b, n in enumerate(lengths.tolist()):
        ref = _rlm(X[b, :n].numpy(), y[b, :n].numpy(), 1.345)
        assert _rel(_params(fit, b), ref.params) < 1e-6
        assert fit.scale[b].item() == pytest.approx(ref.scale, rel=1e-6)


def test_degenerate_datasets_do_not_poison_the_batch():
    X, y = _data("heavy", 5, 12, 1, seed=8)
    x = X[..., 0].clone()
    x[1] = -2.0  # constant x
    mask = torch.ones(5, 12, dtype=torch.bool)
    mask[2, 1:] = False  # one point, two coefficients
    mask[3] = False  # no points
    fit = huber(x, y, mask=mask)
    assert fit.ok.tolist() == [True, False, False, False, True]
    for b in (1, 2, 3):
        assert torch.isnan(fit.slope[b]) and torch.isnan(fit.intercept[b]) and torch.isnan(fit.scale[b])
    for b in (0, 4):
        ref = _rlm(x[b].numpy(), y[b].numpy(), 1.345)
        assert _rel(_params(fit, b), ref.params) < 1e-6


def test_exact_fit_of_a_majority_is_flagged():
    # More than half the points on a line: the MAD scale collapses to 0 (RLM
    # warns and stops); here ok is False and nothing is nan or inf.
    x = torch.arange(9, dtype=F64)
    y = 1 + x
    y[7:] = torch.tensor([40.0, -30.0], dtype=F64)
    fit = huber(x, y)
    assert not fit.ok
    assert 0 <= fit.scale.item() < 1e-12  # zero up to rounding
    assert torch.isfinite(fit.slope) and torch.isfinite(fit.intercept)


def test_slow_scale_iteration_is_flagged_then_matches_rlm():
    # A contaminated dataset on which the scale iteration crosses a repelling
    # stretch (steps grow by ~7% each): RLM needs ~430 iterations (its default
    # maxiter=50 stops early without a word). The default cap flags it; more
    # iterations reach RLM's fixed point.
    x = torch.tensor([
        -0.2255808756421795, 0.310960466890386, 0.3646525880482179,
        -0.5504659369088362, 0.8111618035615195, -0.5478613417238978,
        0.9785773758764033, -1.9501389571578491, -0.7070977578851226,
        1.3640933029760878, -2.929657469659253, -0.5157850247017282,
        0.39201040220973526, -1.6835954558069663, -1.6377340285203645,
        0.012709537230358746, -0.8486292932010503, 0.1999624122910758,
        1.0449430819755954, 1.8020189472377766
    ], dtype=F64)
    y = torch.tensor([
        -21.232053576531353, -0.8511300522987699, -0.052114189621288,
        -0.5378922397862188, -0.037314218176863645, -0.9538055299874709,
        1.8087793605463771, 19.037134426762577, -2.3581569509308786,
        1.4125216114886365, 53.067345858304726, -1.2065083074836391,
        26.02387163981623, -0.0016008948122616662, -1.6899022314707057,
        1.4924860665859423, 16.6312985635654, 0.429088039699539, 44.124430605254545,
        31.64994307741384
    ], dtype=F64)
    short = huber(x, y)
    assert not short.converged and not short.ok and short.iterations == 20
    long = huber(x, y, max_iter=100)
    assert long.ok
    ref = _rlm(x.numpy(), y.numpy(), 1.345)
    assert _rel(np.r_[long.intercept.item(), long.slope.item()], ref.params) < 1e-9
    assert long.scale.item() == pytest.approx(ref.scale, rel=1e-9)


def test_vmap_equals_batched_call():
    X, y = _data("heavy", 5, 30, 2, seed=9)
    batched = huber(X, y)
    mapped = torch.func.vmap(huber)(X, y)
    assert isinstance(mapped, HuberFit)
    for a, b in zip(batched, mapped):
        torch.testing.assert_close(a, b)
    fixed = torch.func.vmap(lambda x, y: huber(x, y, scale=1.0))(X, y)
    torch.testing.assert_close(fixed.slope, huber(X, y, scale=1.0).slope)
    mask = torch.arange(30) < torch.tensor([30, 22, 15, 9, 6]).unsqueeze(-1)
    masked = torch.func.vmap(lambda x, y, m: huber(x, y, mask=m))(X, y, mask)
    torch.testing.assert_close(masked.slope, huber(X, y, mask=mask).slope)


def test_float32_and_dtype_follow_inputs():
    X, y = _data("contaminated", 4, 60, 2, seed=10)
    fit32 = huber(X.float(), y.float())
    fit64 = huber(X, y)
    assert fit32.slope.dtype == torch.float32 and fit32.scale.dtype == torch.float32
    assert fit32.ok.all()
    torch.testing.assert_close(fit32.slope.double(), fit64.slope, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(fit32.scale.double(), fit64.scale, rtol=1e-4, atol=0)


def test_non_convergence_is_flagged():
    X, y = _data("contaminated", 6, 50, 3, seed=12)
    short = huber(X, y, max_iter=2)
    assert not short.converged.any() and not short.ok.any()
    assert (short.iterations == 2).all()
    full = huber(X, y)
    assert full.converged.all() and (full.iterations < 100).all()


def test_blocks_give_the_same_fits(monkeypatch):
    # On the CPU the batch runs in blocks of CPU_BLOCK datasets (for the cache);
    # blocks of 3 must equal one call, per-dataset delta and scale included.
    import lossfn.fit._prepare as prepare_module

    X, y = _data("contaminated", 8, 30, 2, seed=15)
    X, y = X.reshape(2, 4, 30, 2), y.reshape(2, 4, 30)
    delta = torch.linspace(0.8, 2.0, 4, dtype=F64)  # broadcasts over the (2, 4) batch
    scale = torch.full((2, 1), 1.5, dtype=F64)
    runs = {}
    for block in (256, 3):
        monkeypatch.setattr(prepare_module, "CPU_BLOCK", block)
        runs[block] = (huber(X, y, delta=delta), huber(X, y, delta=delta, scale=scale))
    for whole, blocked in zip(runs[256], runs[3]):
        for a, b in zip(whole, blocked):
            assert a.shape == b.shape
            torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)


def test_inputs_not_mutated():
    X, y = _data("heavy", 2, 10, 2, seed=1)
    copies = X.clone(), y.clone()
    huber(X, y, scale=torch.ones(2, dtype=F64))
    assert torch.equal(X, copies[0]) and torch.equal(y, copies[1])


def test_bad_arguments_raise_clear_errors():
    with pytest.raises(ShapeError, match="huber: x and y must have the same number of points"):
        huber(torch.zeros(3, 10), torch.zeros(3, 9))
    with pytest.raises(ValueError, match="huber: scale must be > 0"):
        huber(torch.zeros(10), torch.zeros(10), scale=0.0)
    with pytest.raises(ValueError, match="huber: delta must be > 0"):
        huber(torch.zeros(10), torch.zeros(10), delta=-1.0)


# Huber's location M-estimate (the noise model behind this fit).


def _psi_root(x, scale, delta):
    def score(mu):
        return np.clip((x - mu) / scale, -delta, delta).sum()

    return brentq(score, x.min() - 1, x.max() + 1, xtol=1e-14, rtol=1e-15)


@pytest.mark.parametrize("delta", [0.5, 1.345, 2.0])
def test_huber_location_matches_statsmodels_and_root_finder(delta):
    g = torch.Generator().manual_seed(int(delta * 100))
    samples = lossfn.Huber(delta).sample((3, 51), generator=g, dtype=F64) * 2 + 7
    ours = huber_location(samples, delta=delta)
    model = lossfn.Huber(delta).fit(samples)
    for b in range(3):
        a = samples[b].numpy()
        s = mad(a)  # normalized MAD about the median, as huber_location uses
        assert ours.scale[b].item() == pytest.approx(s, rel=1e-12)
        root = _psi_root(a, s, delta)
        sm_mu = estimate_location(a, s, norm=HuberT(t=delta), maxiter=1000, tol=1e-14)
        assert ours.location[b].item() == pytest.approx(root, rel=1e-12)
        assert ours.location[b].item() == pytest.approx(sm_mu, rel=1e-10)
        assert model.location[b].item() == pytest.approx(root, rel=1e-12)


def test_location_is_regression_on_a_constant():
    # huber(ones, y, no intercept, fixed scale) is the location problem.
    g = torch.Generator().manual_seed(0)
    samples = torch.randn(3, 25, generator=g, dtype=F64) ** 3
    ones = torch.ones(3, 25, 1, dtype=F64)
    fit = huber(ones, samples, intercept=False, scale=0.8, delta=1.0)
    ref = huber_location(samples, scale=0.8, delta=1.0)
    torch.testing.assert_close(fit.slope[..., 0], ref.location, rtol=1e-9, atol=1e-12)


def test_tensor_delta_outside_its_domain_is_not_ok():
    gen = torch.Generator().manual_seed(22)
    x = torch.randn(3, 30, generator=gen, dtype=torch.float64)
    y = 1 + 2 * x + torch.randn(3, 30, generator=gen, dtype=torch.float64)
    out = huber(x, y, delta=torch.tensor([0.0, -1.0, 1.345], dtype=torch.float64))
    assert out.ok.tolist() == [False, False, True]
    assert torch.isnan(out.slope[:2]).all()
    torch.testing.assert_close(out.slope[2], huber(x[2], y[2]).slope)


def test_options_are_validated():
    x = torch.arange(6.0, dtype=torch.float64)
    with pytest.raises(TypeError, match="intercept must be True or False"):
        huber(x, x, intercept=1)
    with pytest.raises(ValueError, match="max_iter"):
        huber(x, x, max_iter=2.5)


# The median of |r| behind the scale rule: full selection and tracking.


def _numpy_middle_pair(a, n):
    ordered = np.sort(a[:n])
    return ordered[(n - 1) // 2], ordered[n // 2]


@pytest.mark.parametrize("m", [7, 40, 41])
def test_middle_pair_and_its_tracking_match_numpy(m):
    from lossfn.fit._prepare import middle_pair, tracked_middle_pair

    g = torch.Generator().manual_seed(m)
    before = torch.randn(6, m, generator=g, dtype=F64).abs()
    before[0, : m // 2] = 1.0  # ties across the middle
    before[1] = before[1].round()  # many ties
    small = before * (1 + 1e-9) + 1e-9 * torch.randn(6, m, generator=g, dtype=F64) * (before != 1.0)
    small[1] = before[1] * (1 + 1e-9)  # ties stay ties
    large = before + 0.5 * torch.randn(6, m, generator=g, dtype=F64)
    lengths = torch.tensor([m, m - 1, m // 2, 3, 1, m])
    for present in (None, torch.arange(m) < lengths.unsqueeze(-1)):
        zero = (lambda v: v) if present is None else (lambda v: torch.where(present, v, 0.0))
        pair = middle_pair(zero(before), present)
        for after, must_be_exact in ((zero(small.abs()), True), (zero(large.abs()), False)):
            reach = (after - zero(before)).abs().amax(-1)
            tracked = tracked_middle_pair(after, reach, pair, present)
            for b in range(6):
                n = m if present is None else lengths[b].item()
                lo, hi = _numpy_middle_pair(after[b].numpy(), n)
                if tracked.exact[b]:
                    assert (tracked.lower[b].item(), tracked.upper[b].item()) == (lo, hi)
                else:  # a guess inside the bracket [lower - D, upper + D]
                    assert pair.lower[b] - reach[b] <= tracked.lower[b] <= pair.upper[b] + reach[b]
            if must_be_exact:
                assert tracked.exact.all()
        full = middle_pair(zero(large.abs()), present)
        assert full.exact.all()
        for b in range(6):
            n = m if present is None else lengths[b].item()
            assert (full.lower[b].item(), full.upper[b].item()) == _numpy_middle_pair(zero(large.abs())[b].numpy(), n)
    # A window of more than WINDOW distinct values cannot be ranked: flagged,
    # and the pair comes back as a bracket of the true one.
    from lossfn.fit._prepare import WINDOW

    wide = torch.rand(6, 3 * WINDOW, generator=g, dtype=F64)
    spread = wide + 0.01 * torch.rand(6, 3 * WINDOW, generator=g, dtype=F64)
    tracked = tracked_middle_pair(spread, torch.full((6,), 0.5, dtype=F64), middle_pair(wide, None), None)
    assert not tracked.exact.any()
    for b in range(6):
        lo, hi = _numpy_middle_pair(spread[b].numpy(), 3 * WINDOW)
        assert tracked.lower[b].item() <= lo <= hi <= tracked.upper[b].item()


def test_middle_pair_of_no_points_is_nan():
    from lossfn.fit._prepare import middle_pair, tracked_middle_pair

    a = torch.zeros(2, 5, dtype=F64)
    present = torch.tensor([[False] * 5, [True] * 5])
    pair = middle_pair(a, present)
    assert torch.isnan(pair.lower[0]) and torch.isnan(pair.upper[0]) and pair.lower[1] == 0
    with_nan = torch.tensor([[1.0, torch.nan, 2.0, 0.0], [1.0, torch.nan, 2.0, 3.0]], dtype=F64)
    assert torch.isnan(middle_pair(with_nan, None).lower).all()
    assert torch.isnan(middle_pair(with_nan, torch.tensor([[True] * 4, [True] * 4])).upper).all()
    tracked = tracked_middle_pair(a, torch.zeros(2, dtype=F64), pair, present)
    assert torch.isnan(tracked.lower[0]) and tracked.lower[1] == 0 and tracked.exact[1]


def test_duplicated_points_converge_and_match_rlm():
    # Duplicated points keep equal residuals: many ties at the median of |r|,
    # which the tracked median must still resolve exactly.
    g = torch.Generator().manual_seed(31)
    x = torch.arange(6, dtype=F64).repeat(12).expand(2, 72)  # 12 copies of each x
    y = (1 + 0.5 * x + torch.randint(-3, 4, (2, 72), generator=g).to(F64)).round()
    y[:, ::7] += 25.0
    fit = huber(x, y)
    assert fit.converged.all() and fit.ok.all()
    for b in range(2):
        ref = _rlm(x[b].numpy(), y[b].numpy(), 1.345)
        assert _rel(_params(fit, b), ref.params) < 1e-6
        assert fit.scale[b].item() == pytest.approx(ref.scale, rel=1e-6)


def test_untracked_medians_are_reanchored(monkeypatch):
    # With a single full selection the tracked median is often too wide to rank
    # early on; the periodic full selections must still bring every dataset
    # to RLM's fixed point, with honest flags.
    import lossfn.fit._huber as huber_module

    monkeypatch.setattr(huber_module, "_SELECTIONS", 1)
    X, y = _data("contaminated", 6, 60, 2, seed=41)
    fit = huber(X, y, max_iter=40)
    assert fit.converged.all() and fit.ok.all()
    for b in range(6):
        ref = _rlm(X[b].numpy(), y[b].numpy(), 1.345)
        assert _rel(_params(fit, b), ref.params) < 1e-6
        assert fit.scale[b].item() == pytest.approx(ref.scale, rel=1e-6)


def test_exact_fit_converges_at_the_scale_of_its_own_residuals():
    """y exactly on a line: the scale is the MAD rule of the fit's own residuals,
    which are rounding noise, reached and flagged converged in few steps; it
    is not meaningful (ok False), and it never decays below them (carried
    residuals r − XΔ once shrank it towards 0 geometrically)."""
    x = torch.tensor([0.3, 1.7, 2.2, 3.9, 5.1, 6.4], dtype=F64)
    y = 1 + 0.7 * x
    res = huber(x, y)
    assert bool(res.converged) and res.iterations.item() < 20 and not bool(res.ok)
    assert res.slope.item() == pytest.approx(0.7, rel=1e-12)
    # The residuals' rounding: eps·max|y| per point. Recomputed here from the
    # returned coefficients they may all round to 0 (the native route returns
    # intercept 1 exactly), so the oracle is that rounding level itself.
    ulp = np.finfo(np.float64).eps * y.abs().max().item()
    assert 1e-3 * ulp <= res.scale.item() <= 10 * ulp
    residuals = y.numpy() - res.intercept.item() - res.slope.item() * x.numpy()
    assert np.median(np.abs(residuals)) / norm.ppf(0.75) <= 10 * ulp


@pytest.mark.parametrize("p, unit_first", [(2, True), (2, False), (3, True), (6, True)])
def test_weighted_solves_match_numpy_solve(p, unit_first):
    # The IRLS and Newton systems (Xᵀ diag(v) X) z = Xᵀ u of one step, against
    # numpy's dense solve; a Gram matrix that is singular (all weights 0 but
    # one point) gives z = 0 instead of an error.
    from lossfn.fit._wls import column_products, weighted_solves

    g = torch.Generator().manual_seed(p)
    B, m = 5, 30
    X = torch.randn(B, m, p, generator=g, dtype=F64)
    if unit_first:
        X[..., 0] = (torch.rand(B, m, generator=g) < 0.9).to(F64)  # intercept weight, some masked
        X[..., 1:] *= X[..., :1]
    weights = torch.rand(B, 2, m, generator=g, dtype=F64)
    weights[:, 1] = weights[:, 1].round()
    weights[0, 1] = 0.0
    weights[0, 1, 3] = 1.0  # rank one: not positive definite
    u = torch.randn(B, 1, m, generator=g, dtype=F64)
    Xt = X.mT.contiguous()
    products = column_products(X, unit_first=unit_first)
    z = weighted_solves(X, Xt, products, torch.cat([weights, u], dim=-2))
    assert z.shape == (B, 2, p)
    Xn, wn, un = X.numpy(), weights.numpy(), u[:, 0].numpy()
    for b in range(B):
        for k in range(2):
            if b == 0 and k == 1:
                assert (z[b, k] == 0).all()
                continue
            gram = Xn[b].T @ (wn[b, k, :, None] * Xn[b])
            expected = np.linalg.solve(gram, Xn[b].T @ un[b])
            np.testing.assert_allclose(z[b, k].numpy(), expected, rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("scale_x, scale_y", [(1e-25, 1e-30), (1e25, 1e20), (1e20, 1.0)])
def test_float32_at_scales_whose_squares_leave_float32(scale_x, scale_y):
    # Once not ok at all: the columns' root mean square over- or underflowed.
    # Oracle: RLM on the same float32 data brought to unit scale in float64.
    X, y = _data("heavy", 3, 50, 1, seed=5)
    x32, y32 = (X[..., 0] * scale_x).float(), (y * scale_y).float()
    fit = huber(x32, y32, delta=1.345)
    assert fit.ok.all() and fit.slope.dtype == torch.float32
    for b in range(3):
        ref = _rlm(x32[b].double().numpy() / scale_x, y32[b].double().numpy() / scale_y, 1.345)
        ours = [fit.intercept[b].item() / scale_y, fit.slope[b].item() * scale_x / scale_y]
        assert _rel(ours, ref.params) < 1e-4
        assert fit.scale[b].item() / scale_y == pytest.approx(ref.scale, rel=1e-4)


def test_tiny_threshold_tends_to_lad_and_infinite_delta_to_ols():
    # δ·s far below every residual: ρ(r/s) is δ|r|/s up to a constant, so the
    # fit minimizes Σ|r| (oracle: the linear programme, HiGHS). The torch
    # route once returned the OLS line with ok=True there (det G underflowed).
    # δ = inf: ρ is r²/2, least squares (oracle: statsmodels OLS).
    from scipy.optimize import linprog

    g = torch.Generator().manual_seed(3)
    x = torch.randn(2, 40, generator=g, dtype=F64)
    y = 1 + 2 * x + torch.randn(2, 40, generator=g, dtype=F64)
    fit = huber(x, y, scale=1e-300, max_iter=5000)
    assert fit.ok.all()
    for b in range(2):
        A = np.c_[np.ones(40), x[b].numpy()]
        lp = linprog(np.r_[0, 0, np.ones(80)], A_eq=np.hstack([A, np.eye(40), -np.eye(40)]),
                     b_eq=y[b].numpy(), bounds=[(None, None)] * 2 + [(0, None)] * 80, method="highs")
        ours = np.abs(y[b].numpy() - A @ _params(fit, b)).sum()
        # IRLS creeps in this limit (no inlier for the Newton step to land on):
        # the steps fall below tol with Σ|r| within ~1e-7 of the optimum; the
        # OLS line is ~1e-2 above it.
        assert ours == pytest.approx(lp.fun, rel=1e-6)
    ols = huber(x, y, delta=torch.tensor([float("inf"), float("inf")], dtype=F64))
    assert ols.ok.all()
    for b in range(2):
        ref = sm.OLS(y[b].numpy(), sm.add_constant(x[b].numpy())).fit()
        assert _rel(_params(ols, b), ref.params) < 1e-10
