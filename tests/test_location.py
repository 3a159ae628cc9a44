"""Batched location/scale estimators against numpy, scipy and a root finder."""

import math
from fractions import Fraction

import numpy as np
import pytest
import torch
from scipy import optimize, stats
from torch.func import vmap

from lossfn import _selection, location


def _ragged(gen, batch=6, m=11):
    x = torch.randn(batch, m, generator=gen, dtype=torch.float64) ** 3
    lengths = torch.randint(1, m + 1, (batch,), generator=gen)
    mask = torch.arange(m) < lengths[:, None]
    junk = torch.where(mask, x, torch.tensor(math.nan, dtype=torch.float64))
    return junk, mask, lengths


@pytest.mark.parametrize("m", [1, 2, 5, 6, 101])
def test_median_equals_numpy(m, gen):
    x = torch.randn(4, m, generator=gen, dtype=torch.float64)
    np.testing.assert_array_equal(location.median(x).numpy(), np.median(x.numpy(), axis=-1))


def test_masked_estimators_equal_trimmed_numpy(gen):
    x, mask, lengths = _ragged(gen)
    med = location.median(x, mask=mask)
    avg = location.mean(x, mask=mask)
    lf = location.laplace_fit(x, mask=mask)
    gf = location.gaussian_fit(x, mask=mask)
    mad = location.mad_scale(x, mask=mask)
    for i, n in enumerate(lengths.tolist()):
        xi = x[i, :n].numpy()
        assert med[i].item() == np.median(xi)
        assert avg[i].item() == pytest.approx(np.mean(xi), rel=1e-14, abs=1e-15)
        loc, b = stats.laplace.fit(xi)
        assert lf.location[i].item() == pytest.approx(loc, abs=1e-14)
        assert lf.scale[i].item() == pytest.approx(b, rel=1e-13, abs=1e-15)
        mu, sd = stats.norm.fit(xi)
        assert gf.location[i].item() == pytest.approx(mu, rel=1e-13, abs=1e-15)
        assert gf.scale[i].item() == pytest.approx(sd, rel=1e-12, abs=1e-15)
        assert mad[i].item() == pytest.approx(stats.median_abs_deviation(xi, scale="normal"), rel=1e-12, abs=1e-15)


def test_empty_and_nan_samples_give_nan_without_poisoning(gen):
    x = torch.randn(3, 5, generator=gen, dtype=torch.float64)
    x[1, 2] = math.nan
    mask = torch.ones(3, 5, dtype=torch.bool)
    mask[2] = False
    for fn in (location.median, location.mean, lambda s, mask: location.huber_location(s, mask=mask).location):
        out = fn(x, mask=mask)
        assert torch.isfinite(out[0]) and torch.isnan(out[1]) and torch.isnan(out[2])
    assert location.median(x, mask=mask)[0].item() == np.median(x[0].numpy())
    for empty in (torch.empty(0, 5), torch.empty(2, 0, 4)):  # no samples: empty results
        assert location.huber_location(empty).location.shape == empty.shape[:-1]
    no_points = torch.empty(4, 0, dtype=torch.float64)
    for fn in (location.median, location.mean, location.mad_scale,
               lambda s: location.huber_location(s).location):
        assert torch.isnan(fn(no_points)).all() and fn(no_points).shape == (4,)


def test_dim_argument(gen):
    x = torch.randn(5, 3, 4, generator=gen, dtype=torch.float64)
    np.testing.assert_array_equal(location.median(x, dim=0).numpy(), np.median(x.numpy(), axis=0))
    np.testing.assert_allclose(location.gaussian_fit(x, dim=1).scale.numpy(), x.numpy().std(axis=1), rtol=1e-13)


def _huber_root(xi, c):
    f = lambda mu: np.clip(xi - mu, -c, c).sum()
    return optimize.brentq(f, xi.min() - 1, xi.max() + 1, xtol=1e-15, rtol=1e-15)


@pytest.mark.parametrize("m", [2, 3, 10, 57])
def test_huber_location_is_the_root_of_the_estimating_equation(m, gen):
    x = torch.randn(20, m, generator=gen, dtype=torch.float64) ** 3 * 5
    fit = location.huber_location(x, delta=1.345)
    for i in range(20):
        xi = x[i].numpy()
        s = stats.median_abs_deviation(xi, scale="normal")
        assert fit.scale[i].item() == pytest.approx(s, rel=1e-12)
        if s > 0:
            # The root is unique when some point is inside the band; compare then.
            mu = _huber_root(xi, 1.345 * s)
            assert fit.location[i].item() == pytest.approx(mu, abs=1e-10 * (1 + abs(mu)))


def test_huber_location_with_known_scale_ragged_and_tensor_delta(gen):
    x, mask, lengths = _ragged(gen, batch=8, m=15)
    delta = torch.linspace(0.5, 2.0, 8, dtype=torch.float64)
    fit = location.huber_location(x, delta=delta, scale=2.0, mask=mask)
    for i, n in enumerate(lengths.tolist()):
        xi = x[i, :n].numpy()
        c = delta[i].item() * 2.0
        g = lambda mu: np.clip(xi - mu, -c, c).sum()
        mu = fit.location[i].item()
        # On the root g vanishes; where g is flat at 0, mu must be inside that interval.
        assert abs(g(mu)) < 1e-10 * (1 + np.abs(xi).sum())


def test_huber_location_limits(gen):
    x = torch.randn(4, 9, generator=gen, dtype=torch.float64)
    big = location.huber_location(x, delta=1e6, scale=1.0).location
    torch.testing.assert_close(big, x.mean(-1), rtol=1e-12, atol=1e-12)
    small = location.huber_location(x, delta=1e-9, scale=1.0).location
    torch.testing.assert_close(small, torch.from_numpy(np.median(x.numpy(), axis=-1)), rtol=0, atol=1e-8)


def test_huber_location_flat_root_takes_the_midpoint():
    # g(μ) = 0 on [1, 9]: the midpoint is 5, as for the median of two points.
    x = torch.tensor([0.0, 10.0], dtype=torch.float64)
    assert location.huber_location(x, delta=1.0, scale=1.0).location.item() == 5.0


def _exact_huber_root(values, c):
    """Root of Σ clip(x − μ, −c, c) = 0 in exact rational arithmetic; the midpoint where g vanishes on an interval."""
    xs, c = [Fraction(v) for v in values], Fraction(c)
    knots = sorted({v - c for v in xs} | {v + c for v in xs})
    g = [sum(min(max(v - k, -c), c) for v in xs) for k in knots]

    def crossing(past):  # g is linear between knots; the first knot past the root
        i = next(i for i, gk in enumerate(g) if past(gk))  # i ≥ 1: g(first knot) = c·n > 0
        a, b, ga, gb = knots[i - 1], knots[i], g[i - 1], g[i]
        return a + ga / (ga - gb) * (b - a)

    return (crossing(lambda v: v <= 0) + crossing(lambda v: v < 0)) / 2


def _contaminated_rows(rng, count, max_m):
    rows = []
    for _ in range(count):
        m = int(rng.integers(1, max_m + 1))
        x = rng.standard_normal(m) ** 3 * 5
        x[: int(rng.integers(0, m + 1)) // 3] *= 10.0 ** int(rng.integers(0, 13))  # gross outliers
        if rng.random() < 0.3:
            x = np.round(x)  # ties, and roots that sit on knots or flat stretches
        rows.append(x)
    return rows


@pytest.mark.parametrize("rows", [60, 2100])
def test_huber_location_is_exact_with_gross_outliers_and_ties(rows):
    # Outliers up to 1e12 times the bulk: sums that ran through them would carry
    # eps·1e12 into the root (the previous prefix sums gave errors of 80%).
    # 2100 rows take the sorting network, 60 rows torch.sort.
    rng = np.random.default_rng(7)
    distinct = _contaminated_rows(rng, 60, 30)
    data = [distinct[i % 60] for i in range(rows)]
    x = np.full((rows, 30), np.nan)
    for i, row in enumerate(data):
        x[i, : len(row)] = row
    x, mask = torch.from_numpy(x), torch.from_numpy(~np.isnan(x))
    assert _selection.network_pays(torch.where(mask, x, 0.0)) == (rows > 2048)
    for scale in (1.0, 1e-3, 1e4):
        fit = location.huber_location(x, delta=1.345, scale=scale, mask=mask).location
        for i, row in enumerate(distinct):
            exact = _exact_huber_root(row, 1.345 * scale)
            assert abs(fit[i].item() - float(exact)) <= 1e-14 * (abs(float(exact)) + scale), (i, scale)
    fit = location.huber_location(x, mask=mask)  # the MAD scale
    for i, row in enumerate(distinct[:20]):
        s = fit.scale[i].item()  # 0 for a row of ≤ 2 points or mostly ties: then the median
        exact = _exact_huber_root(row, 1.345 * s) if s > 0 else np.median(row)
        assert abs(fit.location[i].item() - float(exact)) <= 1e-14 * (abs(float(exact)) + s)


@pytest.mark.parametrize("delta", [1e-40, 1e-17, 1e-13])
def test_huber_location_exact_when_the_band_is_below_the_data_ulp(delta):
    # c below the spacing of the data: the knots r ± c round onto the points, and
    # the sums over tied points must be exactly 0 for the signs of g to be right.
    rng = np.random.default_rng(9)
    x = np.round(rng.standard_normal((200, 9)) * 3) / 10  # many ties
    fit = location.huber_location(torch.from_numpy(x), delta=delta, scale=1.0).location
    for i in range(200):
        exact = float(_exact_huber_root(x[i], delta))
        assert fit[i].item() == pytest.approx(exact, abs=1e-15), i
    one = torch.tensor([0.3, 0.1, 0.3, 0.7, 2.9, 2.9], dtype=torch.float64)
    assert location.huber_location(one, delta=1e-17, scale=1.0).location.item() == pytest.approx(0.5)


def test_huber_location_with_a_band_wider_than_the_float_range_is_the_mean():
    x = torch.tensor([[0.3, 0.1, 0.3, 0.7, 2.9, 2.9]], dtype=torch.float64)
    torch.testing.assert_close(location.huber_location(x, delta=1e308, scale=10.0).location, x.mean(-1))


def test_huber_location_of_float32_data_near_the_top_of_the_range():
    # Exp(1)·1e36, m = 200: c ≈ 9e35. A cap on c at finfo.max/(4m) = 4.3e35
    # once turned this into another estimator without a sign; only a band
    # wider than the points' span may be narrowed (to the span: the same mean).
    g = torch.Generator().manual_seed(0)
    x = (-torch.rand(200, generator=g, dtype=torch.float64).log() * 1e36).float()
    fit = location.huber_location(x)
    assert 1.345 * fit.scale.item() > torch.finfo(torch.float32).max / (4 * 200)
    xs = x.double().numpy() * 2.0**-116  # exactly rescaled, float64
    med = np.median(xs)
    s = np.median(np.abs(xs - med)) / location.MAD_TO_SIGMA
    exact = float(_exact_huber_root(xs, 1.345 * s)) / 2.0**-116
    assert fit.location.item() == pytest.approx(exact, rel=1e-6)


@pytest.mark.parametrize("case", ["four", "uniform", "three", "outlier", "float64"])
def test_huber_location_with_a_band_whose_sums_would_overflow_is_the_mean(case):
    # δ·s far beyond the data: the mean. c·n and r ± 2c reach 4·n·span, which
    # overflowed (wrong means, nan) for data near the top of the range.
    x, kw = {
        "four": (torch.tensor([-1e38, 1e38, 0.5e38, 0.9e38]), dict(delta=1e6)),
        "uniform": (torch.rand(400, generator=torch.Generator().manual_seed(0)) * 1.6e38 - 0.8e38,
                    dict(delta=1e6)),
        "three": (torch.tensor([-1e38, 1e38, 0.5e38]), dict(delta=3e38, scale=1.0)),
        "outlier": (torch.cat([torch.linspace(-1e36, 1e36, 199), torch.tensor([3e36])]),
                    dict(delta=3e38, scale=1.0)),
        "float64": (torch.tensor([-1e308, 1e308, 0.5e308], dtype=torch.float64),
                    dict(delta=1.7e308, scale=1.0)),
    }[case]
    mean = float(sum(Fraction(float(v)) for v in x) / len(x))
    eps = torch.finfo(x.dtype).eps
    assert location.huber_location(x, **kw).location.item() == pytest.approx(mean, rel=8 * eps * len(x))


def _bisected_huber_root(x, c):
    """Float64 bisection on Σ clip(x − μ, −c, c) = 0: an oracle independent of the knots."""
    lo, hi = x.min(), x.max()
    for _ in range(200):
        mid = 0.5 * (lo + hi)
        lo, hi = (mid, hi) if np.clip(x - mid, -c, c).sum() > 0 else (lo, mid)
    return 0.5 * (lo + hi)


@pytest.mark.parametrize("m, size", [(400, 1e36), (2**20, 5e37)])
def test_huber_location_with_a_band_inside_data_near_the_top_of_the_range(m, size):
    # 1e36-size float32 data: c·n overflows, so the root is taken in a unit.
    # Once −1.68e34 for a true 1.21e34 (m = 400), and nan at 2^20 points (the
    # unit rounded to 0); the gradient was nan on this path (1/unit overflowed).
    g = torch.Generator().manual_seed(3)
    x = (size * torch.randn(m, generator=g, dtype=torch.float64)).float()
    scale = float(torch.tensor(size))  # the float32 value, as the fit sees it
    fit = location.huber_location(x, delta=1.345, scale=scale).location
    unit = 2.0**-120  # exact rescaling for the float64 oracle
    c = float(torch.tensor(1.345) * torch.tensor(scale))
    exact = _bisected_huber_root(x.double().numpy() * unit, c * unit) / unit
    assert fit.item() == pytest.approx(exact, rel=1e-5, abs=size * 1e-6)
    if m == 400:
        got = torch.func.grad(lambda v: location.huber_location(v, delta=1.345, scale=scale).location)(x)
        inside = ((x.double() - exact).abs() < c).float()
        torch.testing.assert_close(got, inside / inside.sum())  # dμ/dx_i = 1{inside}/n_inside


def test_huber_location_in_float32_on_the_network():
    rng = np.random.default_rng(8)
    x = (rng.standard_normal((2100, 25)) ** 3 * 5 + 100).astype(np.float32)
    fit = location.huber_location(torch.from_numpy(x), delta=1.0, scale=2.0).location
    assert fit.dtype == torch.float32
    for i in range(0, 2100, 150):
        exact = float(_exact_huber_root(x[i].astype(np.float64), 2.0))
        assert abs(fit[i].item() - exact) <= 1e-5 * abs(exact)


def test_gradient_of_huber_location_is_the_band_average(gen):
    # dμ/dx_k = [|x_k − μ| < c] / #band at a fixed scale (implicit differentiation
    # of Σ clip(x − μ, −c, c) = 0); the median's own gradient cancels.
    x = torch.randn(2100, 9, generator=gen, dtype=torch.float64) ** 3
    got = torch.func.grad(lambda a: location.huber_location(a, delta=1.0, scale=0.7).location.sum())(x)
    mu = location.huber_location(x, delta=1.0, scale=0.7).location
    band = ((x - mu[:, None]).abs() < 0.7).double()
    torch.testing.assert_close(got, band / band.sum(-1, keepdim=True), rtol=0, atol=1e-12)


def test_gradient_of_huber_location_where_the_root_sits_on_a_knot():
    # x = [0, 1, 2], c = 1: μ = 1 is also the knot 0 + c and 2 − c. The band
    # average [1/4, 1/2, 1/4] is the derivative along x₁ and a subgradient along
    # x₀ and x₂ (one-sided: 1/3 and 0); a clamp at the knot once split the
    # gradient between the root and the knot, giving [3/8, 1/4, 3/8].
    x = torch.tensor([0.0, 1.0, 2.0], dtype=torch.float64)
    got = torch.func.grad(lambda a: location.huber_location(a, delta=1.0, scale=1.0).location)(x)
    torch.testing.assert_close(got, torch.tensor([0.25, 0.5, 0.25], dtype=torch.float64))


def test_vmap_equals_batched(gen):
    x, mask, _ = _ragged(gen)
    for fn in (location.median, location.mean, location.mad_scale):
        torch.testing.assert_close(vmap(lambda a, b: fn(a, mask=b))(x, mask), fn(x, mask=mask), equal_nan=True)
    hub = vmap(lambda a, b: location.huber_location(a, mask=b).location)(x, mask)
    torch.testing.assert_close(hub, location.huber_location(x, mask=mask).location, equal_nan=True)


def test_mean_is_accurate_with_large_offsets():
    # NIST NumAcc4-like: 1e7 + 0.1·k, float64
    x = torch.tensor([1e7 + 0.2] + [1e7 + 0.1, 1e7 + 0.3] * 500, dtype=torch.float64)
    assert location.mean(x).item() == pytest.approx(10000000.2, rel=1e-15)


def test_bad_mask_type():
    with pytest.raises(TypeError, match="bool"):
        location.median(torch.zeros(3), mask=torch.ones(3))
    with pytest.raises(TypeError, match="floating-point"):
        location.median(torch.zeros(3, dtype=torch.long))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_median_of_many_short_rows_equals_numpy_for_m_1_to_80(dtype, gen):
    for m in range(1, 81):
        x = torch.randn(max(2048, 64 * m), m, generator=gen, dtype=dtype)
        assert _selection.network_pays(x) == (m > 1)  # the path under test
        x[:9].round_()  # ties
        x[9, m // 2] = math.nan
        x[10, 0] = math.inf
        x[11, -1] = -math.inf
        x[12, :] = math.inf
        x[13, : (m + 1) // 2] = -math.inf
        got = location.median(x)
        expected = np.median(x.numpy(), axis=-1)
        np.testing.assert_array_equal(got.numpy(), expected)
        assert got.dtype == dtype
        # The masked (sort-based) path is an independent implementation: same values.
        head = x[:32]
        full = torch.ones(head.shape, dtype=torch.bool)
        np.testing.assert_array_equal(location.median(head, mask=full).numpy(), expected[:32])


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_median_of_many_short_rows_in_half_precision(dtype, gen):
    for m in (2, 3, 24, 25, 64):
        x = torch.randn(max(2048, 64 * m), m, generator=gen).to(dtype)
        assert _selection.network_pays(x)
        ordered = x.double().sort(-1).values
        exact = ((ordered[:, (m - 1) // 2] + ordered[:, m // 2]) / 2).to(dtype)
        torch.testing.assert_close(location.median(x), exact, rtol=0, atol=0)


@pytest.mark.parametrize("m", [9, 10])
def test_fits_without_a_mask_take_the_fast_median_and_agree_with_scipy(m, gen):
    x = torch.randn(2048, m, generator=gen, dtype=torch.float64) ** 3
    assert _selection.network_pays(x)
    x[5, 3] = math.nan
    full = torch.ones(x.shape, dtype=torch.bool)
    for fn in (location.laplace_fit, location.mad_scale,
               lambda s, mask=None: location.huber_location(s, mask=mask)):
        torch.testing.assert_close(fn(x), fn(x, mask=full), rtol=0, atol=0, equal_nan=True)
    # Every row against numpy/scipy (nan propagates in both), not only the masked path.
    lf, mad = location.laplace_fit(x), location.mad_scale(x)
    xn = x.numpy()
    centre = np.median(xn, axis=-1)
    np.testing.assert_array_equal(lf.location.numpy(), centre)
    np.testing.assert_allclose(lf.scale.numpy(), np.abs(xn - centre[:, None]).mean(-1), rtol=1e-12)
    np.testing.assert_allclose(mad.numpy(), stats.median_abs_deviation(xn, axis=-1, scale="normal"),
                               rtol=1e-13)


@pytest.mark.parametrize("m", [1, 2, 7, 12, 33])
def test_masked_median_of_many_rows_equals_numpy_on_the_present_points(m, gen):
    rows = max(2048, 64 * m)
    x = torch.randn(rows, m, generator=gen, dtype=torch.float64).round(decimals=1)  # ties
    lengths = torch.randint(0, m + 1, (rows,), generator=gen)
    mask = torch.arange(m) < lengths[:, None]
    x = torch.where(mask, x, torch.tensor(math.nan, dtype=torch.float64))  # never read
    x[0, 0] = math.inf
    x[1, :] = -math.inf
    assert _selection.network_pays(x) == (m > 1)
    got = location.median(x, mask=mask)
    for i in list(range(40)) + [rows - 1]:
        n = lengths[i].item()
        expected = np.median(x[i, :n].numpy()) if n else math.nan
        np.testing.assert_array_equal(got[i].numpy(), expected)
    # a nan among the present points gives nan; masked-out nan never does
    x[2, 0] = math.nan
    mask[2, 0] = True
    assert torch.isnan(location.median(x, mask=mask)[2])
    vmapped = vmap(lambda a, b: location.median(a, mask=b))(x[None], mask[None])[0]
    torch.testing.assert_close(vmapped, location.median(x, mask=mask), equal_nan=True, rtol=0,
                               atol=0)


def test_network_median_over_a_leading_dim_and_a_non_contiguous_view(gen):
    x = torch.randn(9, 2, 2100, generator=gen)
    assert _selection.network_pays(x.movedim(0, -1))
    np.testing.assert_array_equal(location.median(x, dim=0).numpy(), np.median(x.numpy(), axis=0))
    view = x.transpose(1, 2)[..., ::2, :]  # (9, 1050, 2) with strides, reduced over dim 0
    np.testing.assert_array_equal(location.median(view, dim=0).numpy(),
                                  np.median(view.numpy(), axis=0))


def test_gradient_of_the_masked_network_median(gen):
    m, rows = 7, 2048
    x = torch.randn(rows, m, generator=gen, dtype=torch.float64)
    lengths = torch.randint(1, m + 1, (rows,), generator=gen)
    mask = torch.arange(m) < lengths[:, None]
    assert _selection.network_pays(x)
    g = torch.func.grad(lambda a: location.median(a, mask=mask).sum())(x)
    expected = np.zeros((rows, m))
    for i, n in enumerate(lengths.tolist()):
        order = np.argsort(x[i, :n].numpy())
        expected[i, order[(n - 1) // 2]] += 0.5
        expected[i, order[n // 2]] += 0.5
    np.testing.assert_array_equal(g.numpy(), expected)
