"""lossfn._native.huber and lad (huber.c, lad.c): the robust fits in C against
statsmodels RLM, numpy's median, scipy's linprog and the torch route, their
memory bounds, threads and routing.

tests/fit/test_huber.py and test_lad.py run every fit test on both routes;
these are the kernels' own: many points (the sampled selection of the
median), ties, data they must refuse, reads past the data, and the calls they
must not serve."""

from __future__ import annotations

import numpy as np
import pytest
import statsmodels.api as sm
import torch
from statsmodels.robust.norms import HuberT
from statsmodels.robust.scale import mad

import lossfn._native as native
from lossfn.fit import huber, lad
from lossfn.fit._prepare import standardize
from test_native import _before_a_guard_page, _on_one_and_two_threads

F64 = torch.float64


@pytest.fixture(autouse=True)
def native_on(monkeypatch):
    monkeypatch.delenv("LOSSFN_NATIVE", raising=False)
    assert native.available(), "the native kernels did not build (see the warning)"


def _contaminated(B, m, d, seed, *, ties=False):
    g = torch.Generator().manual_seed(seed)
    X = torch.randn(B, m, d, generator=g, dtype=F64)
    y = 1.0 + X.sum(-1) + torch.randn(B, m, generator=g, dtype=F64)
    y = y + (torch.rand(B, m, generator=g, dtype=F64) < 0.15) * 30 * torch.randn(B, m, generator=g, dtype=F64)
    if ties:  # integer data: many |r| tie at the median
        X, y = X.round(), y.round()
    return X, y


def _rlm(x, y):
    exog = sm.add_constant(np.asarray(x).reshape(len(y), -1), has_constant="add")
    return sm.RLM(np.asarray(y), exog, M=HuberT(t=1.345)).fit(maxiter=2000, tol=1e-15)


def _spy(monkeypatch, name="huber"):
    """Count the calls that reach the kernel (and what it returns)."""
    served = []
    real = getattr(native, name)

    def spy(*args, **kwargs):
        out = real(*args, **kwargs)
        served.append(out is not None)
        return out

    monkeypatch.setattr(native, name, spy)
    return served


@pytest.mark.parametrize("m, ties", [(130, False), (999, False), (1000, True), (4001, True)])
def test_many_points_and_ties_match_rlm_and_the_median_rule(monkeypatch, m, ties):
    # From 124 present points the median's selection narrows by samples first;
    # an odd and an even count, with and without ties at the middle.
    X, y = _contaminated(3, m, 2, seed=m, ties=ties)
    served = _spy(monkeypatch)
    fit = huber(X, y)
    assert served == [True] and fit.ok.all()
    for b in range(3):
        ref = _rlm(X[b].numpy(), y[b].numpy())
        ours = np.r_[fit.intercept[b].item(), fit.slope[b].numpy()]
        assert np.abs(ours - ref.params).max() <= 1e-6 * np.abs(ref.params).max()
        assert fit.scale[b].item() == pytest.approx(ref.scale, rel=1e-6)
        # The fixed point: the scale is the MAD about 0 of the fit's own residuals.
        r = y[b].numpy() - np.c_[np.ones(m), X[b].numpy()] @ ours
        assert fit.scale[b].item() == pytest.approx(mad(r, center=0), rel=1e-9)


def test_agrees_with_the_torch_route_and_stops_no_later(monkeypatch):
    X, y = _contaminated(40, 60, 3, seed=3)
    lengths = torch.randint(10, 61, (40,), generator=torch.Generator().manual_seed(4))
    mask = torch.arange(60) < lengths.unsqueeze(-1)
    for options in ({}, {"scale": 2.0}, {"mask": mask}, {"intercept": False}):
        fast = huber(X, y, **options)
        monkeypatch.setenv("LOSSFN_NATIVE", "0")
        slow = huber(X, y, **options)
        monkeypatch.delenv("LOSSFN_NATIVE")
        assert torch.equal(fast.ok, slow.ok) and torch.equal(fast.converged, slow.converged)
        torch.testing.assert_close(fast.slope, slow.slope, rtol=1e-8, atol=1e-8)
        torch.testing.assert_close(fast.scale, slow.scale, rtol=1e-8, atol=0)
        # The torch route runs every dataset to a common step; here each stops on its own.
        assert (fast.iterations <= slow.iterations + 1).all()


def test_nan_and_inf_in_present_points_poison_only_their_dataset():
    X, y = _contaminated(4, 30, 2, seed=5)
    X[1, 3, 0] = float("nan")
    y[2, 7] = float("inf")
    mask = torch.ones(4, 30, dtype=torch.bool)
    mask[3, 5] = False
    X[3, 5, 1] = float("nan")  # absent: never read
    fit = huber(X, y, mask=mask)
    assert fit.ok.tolist() == [True, False, False, True]
    assert torch.isnan(fit.slope[1:3]).all() and torch.isnan(fit.intercept[1:3]).all()
    assert not fit.converged[1:3].any()
    clean = huber(X[3, mask[3]], y[3, mask[3]])
    torch.testing.assert_close(fit.slope[3], clean.slope, rtol=1e-12, atol=0)


def test_reads_nothing_past_the_data():
    # design, response and weight each end right before a page the process may
    # not read; point counts around the kernel's vectors of 8.
    gen = torch.Generator().manual_seed(6)
    for m in (3, 7, 8, 9, 17):
        for p in (1, 2, 5):
            X = torch.randn(2, m, p, generator=gen, dtype=F64)
            y = torch.randn(2, m, generator=gen, dtype=F64)
            w = (torch.rand(2, m, generator=gen) < 0.8).to(F64)
            w[:, :3] = 1.0
            X, y = X * w.unsqueeze(-1), y * w
            delta = torch.full((2,), 1.345, dtype=F64)
            want = native.huber(X, y, w, delta, None, max_iter=30, tol=1e-10)
            with _before_a_guard_page(2 * m * p, F64) as gx, _before_a_guard_page(2 * m, F64) as gy, \
                    _before_a_guard_page(2 * m, F64) as gw:
                gx.copy_(X.flatten())
                gy.copy_(y.flatten())
                gw.copy_(w.flatten())
                got = native.huber(gx.view(2, m, p), gy.view(2, m), gw.view(2, m), delta, None,
                                   max_iter=30, tol=1e-10)
                del gx, gy, gw
            for a, b in zip(got, want):
                assert torch.equal(a, b) or torch.equal(a.isnan(), b.isnan())


def test_threads_give_the_same_bits():
    # 41 datasets: uneven shares on two threads.
    X, y = _contaminated(41, 400, 3, seed=7)
    std, _ = standardize("huber", X, y, None, True)
    delta = torch.full((41,), 1.345, dtype=F64)
    one, two = _on_one_and_two_threads(
        lambda: native.huber(std.design, std.response, std.weight, delta, None, max_iter=20, tol=1e-10))
    assert all(torch.equal(a, b) for a, b in zip(one, two))


def test_calls_it_cannot_serve_take_the_torch_route(monkeypatch):
    X, y = _contaminated(3, 40, 2, seed=8)
    served = _spy(monkeypatch)
    huber(X, y)
    assert served == [True]
    served.clear()
    torch.func.vmap(huber)(X, y)  # a transform: the torch route, which composes
    wide = torch.randn(2, 80, 64, generator=torch.Generator().manual_seed(9), dtype=F64)
    huber(wide, wide.sum(-1))  # 65 coefficients: more than the kernel's scratch holds
    monkeypatch.setenv("LOSSFN_NATIVE", "0")
    huber(X, y)
    assert served == [False, False, False]  # each asked, each refused


def test_rank_rule_matches_the_torch_route():
    # A column that is a combination of the others to within 1e-8 (rank-
    # deficient by the rule) next to one that is not (1e-3).
    g = torch.Generator().manual_seed(10)
    X = torch.randn(2, 50, 3, generator=g, dtype=F64)
    X[0, :, 2] = X[0, :, 0] - 2 * X[0, :, 1] + 1e-8 * torch.randn(50, generator=g, dtype=F64)
    X[1, :, 2] = X[1, :, 0] - 2 * X[1, :, 1] + 1e-3 * torch.randn(50, generator=g, dtype=F64)
    y = X.sum(-1) + torch.randn(2, 50, generator=g, dtype=F64)
    fit = huber(X, y)
    assert fit.ok.tolist() == [False, True]
    assert torch.isnan(fit.slope[0]).all() and torch.isfinite(fit.slope[1]).all()


def test_any_max_iter_is_honoured():
    # max_iter is any int; the kernel's count is int64 (a 32-bit one once
    # wrapped 2**31 to a negative count and returned the start, not ok).
    X, y = _contaminated(2, 40, 1, seed=11)
    want = huber(X, y, max_iter=50)
    for cap in (2**31, 2**32 + 3, 2**63 - 1, 2**70):
        got = huber(X, y, max_iter=cap)
        assert got.ok.all() and torch.equal(got.iterations, want.iterations)
        torch.testing.assert_close(got.slope, want.slope, rtol=0, atol=0)



# --- LAD (lad.c) ---------------------------------------------------------------------


def _lp_objective(X, y):
    """min Σ|y − a − Xb| by HiGHS, posed at unit scale (its tolerances are absolute)."""
    from scipy.optimize import linprog

    unit = np.abs(y).max()
    A = np.c_[np.ones(len(y)), X]
    m, p = A.shape
    res = linprog(np.r_[np.zeros(p), np.ones(2 * m)], A_eq=np.hstack([A, np.eye(m), -np.eye(m)]),
                  b_eq=y / unit, bounds=[(None, None)] * p + [(0, None)] * (2 * m), method="highs")
    return res.fun * unit


def test_lad_walks_as_the_torch_route_and_stops_early(monkeypatch):
    # The same rules step for step: the same exchanges on every dataset (the
    # torch route runs them all in lockstep for max_iter), the same optimum.
    X, y = _contaminated(30, 150, 3, seed=12, ties=False)
    Xi, yi = _contaminated(30, 150, 3, seed=13, ties=True)  # degenerate vertices
    lengths = torch.randint(8, 151, (30,), generator=torch.Generator().manual_seed(14))
    mask = torch.arange(150) < lengths.unsqueeze(-1)
    served = _spy(monkeypatch, "lad")
    for args, options in (((X, y), {}), ((Xi, yi), {}), ((X, y), {"mask": mask}),
                          ((X, y), {"intercept": False})):
        fast = lad(*args, **options)
        monkeypatch.setenv("LOSSFN_NATIVE", "0")
        slow = lad(*args, **options)
        monkeypatch.delenv("LOSSFN_NATIVE")
        assert torch.equal(fast.ok, slow.ok) and fast.ok.all()
        torch.testing.assert_close(fast.objective, slow.objective, rtol=1e-12, atol=0)
        # Rounding can break a tie between crossings the other way (integer data:
        # 27 of 30 walks alike here); elsewhere every walk is the same.
        assert (fast.iterations == slow.iterations).float().mean() >= (0.75 if args[0] is Xi else 1.0)
    assert served == [True, False] * 4


@pytest.mark.parametrize("m, d", [(1000, 2), (400, 8)])
def test_lad_objective_equals_the_linear_programme(m, d):
    X, y = _contaminated(3, m, d, seed=m + d)
    fit = lad(X, y)
    assert fit.ok.all()
    for b in range(3):
        assert fit.objective[b].item() == pytest.approx(_lp_objective(X[b].numpy(), y[b].numpy()), rel=1e-9)


def test_lad_nan_inf_threads_guard_pages_and_routing(monkeypatch):
    X, y = _contaminated(41, 300, 3, seed=15)
    X[1, 3, 0] = float("nan")
    y[2, 7] = float("-inf")
    fit = lad(X, y)
    assert fit.ok.tolist() == [True, False, False] + [True] * 38
    assert torch.isnan(fit.slope[1:3]).all() and (fit.iterations[1:3] == 0).all()
    # Threads: each dataset on one thread, bit for bit.
    std, _ = standardize("lad", X, y, None, True)
    walk = std.response + 1e-11
    one, two = _on_one_and_two_threads(lambda: native.lad(std.design, std.response, walk, std.weight,
                                                          max_iter=30))
    assert all(torch.equal(a.nan_to_num(), b.nan_to_num()) for a, b in zip(one, two))
    # Nothing read past the design, the responses or the weights.
    gen = torch.Generator().manual_seed(16)
    for m, p in ((3, 2), (9, 2), (17, 4)):
        Xs = torch.randn(2, m, p, generator=gen, dtype=F64)
        ys = torch.randn(2, m, generator=gen, dtype=F64)
        ws = torch.ones(2, m, dtype=F64)
        want = native.lad(Xs, ys, ys + 1e-9, ws, max_iter=20)
        with _before_a_guard_page(2 * m * p, F64) as gx, _before_a_guard_page(2 * m, F64) as gy, \
                _before_a_guard_page(2 * m, F64) as gk, _before_a_guard_page(2 * m, F64) as gw:
            gx.copy_(Xs.flatten()), gy.copy_(ys.flatten()), gk.copy_((ys + 1e-9).flatten()), gw.copy_(ws.flatten())
            got = native.lad(gx.view(2, m, p), gy.view(2, m), gk.view(2, m), gw.view(2, m), max_iter=20)
            del gx, gy, gk, gw
        assert all(torch.equal(a, b) for a, b in zip(got, want))
    # Calls it cannot serve: a transform, more coefficients than its scratch holds.
    served = _spy(monkeypatch, "lad")
    torch.func.vmap(lad)(X[:3, :, :2], y[:3])
    wide = torch.randn(2, 80, 64, generator=gen, dtype=F64)
    lad(wide, wide.sum(-1))
    assert served == [False, False]


def test_constants_written_twice_agree():
    # The kernels repeat a few of the Python side's constants as #defines.
    import re
    from pathlib import Path

    from lossfn.fit import _lad
    from lossfn.location import MAD_TO_SIGMA

    here = Path(native.__file__).parent

    def define(name, source):
        found = re.search(rf"#define {name} ([0-9.eE+-]+)", (here / source).read_text())
        assert found, name
        return float(found.group(1))

    assert define("MAD_TO_SIGMA", "huber.c") == MAD_TO_SIGMA
    assert define("IRLS_STEPS", "lad.c") == _lad._IRLS_STEPS
    assert define("NEAREST", "lad.c") == _lad._NEAREST
    assert define("PMAX", "robust.h") == native.MAX_COEFFICIENTS
    assert define("KMAX", "gram.h") == native.MAX_COLUMNS
