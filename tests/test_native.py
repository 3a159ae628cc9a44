"""lossfn._native: the C kernels (one predictor's moments, the Gram matrices of
several) against float64 sums taken with math.fsum and numpy, the rules that
send a call to the torch route, and the loader's cache."""

from __future__ import annotations

import contextlib
import math
import tempfile
import warnings

import numpy as np
import pytest
import torch

import lossfn._native as native
from lossfn import fit


@pytest.fixture(autouse=True)
def native_on(monkeypatch):
    monkeypatch.delenv("LOSSFN_NATIVE", raising=False)
    assert native.available(), "the native kernels did not build (see the warning)"


def _oracle(x: np.ndarray, y: np.ndarray, keep: np.ndarray):
    """Two-pass centred sums of the kept points, each sum correctly rounded (fsum)."""
    xs, ys = x[keep].astype(np.float64), y[keep].astype(np.float64)
    n = len(xs)
    if n == 0:
        return [math.nan] * 5
    mx, my = math.fsum(xs) / n, math.fsum(ys) / n
    dx, dy = xs - mx, ys - my
    return [mx, my, math.fsum(dx * dx), math.fsum(dx * dy), math.fsum(dy * dy)]


def _check(x, y, present, rtol):
    got = native.line_sums(x, y, present)
    assert got is not None and all(g.dtype == torch.float64 for g in got)
    m = y.shape[-1]
    xs, ys = x.reshape(-1, m).numpy(), y.reshape(-1, m).numpy()
    keep = np.ones_like(ys, dtype=bool) if present is None else present.reshape(-1, m).numpy()
    got = torch.stack(got, -1).reshape(-1, 5).numpy()
    for row in range(ys.shape[0]):
        want = _oracle(xs[row], ys[row], keep[row])
        if math.isnan(want[0]):
            assert np.isnan(got[row]).all()
            continue
        n = keep[row].sum()
        # Means to a few ulps of the mean plus rtol of the spread; sums to rtol.
        eps = np.finfo(np.float64).eps
        tol = rtol * np.array([math.sqrt(want[2] / n), math.sqrt(want[4] / n),
                               want[2], math.sqrt(want[2] * want[4]), want[4]])
        tol[:2] += 2 * eps * np.abs(want[:2])  # corrected means: within an ulp or so
        error = np.abs(got[row] - np.array(want))
        assert (error <= tol).all(), (row, got[row], want)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("m", [1, 2, 7, 100, 1023, 1024, 1025, 3000])
def test_sums_against_fsum(dtype, m):
    gen = torch.Generator().manual_seed(m)
    x = 1e3 + 5 * torch.randn(6, m, generator=gen, dtype=torch.float64)
    y = 2 - 3 * x + torch.randn(6, m, generator=gen, dtype=torch.float64)
    x, y = x.to(dtype), y.to(dtype)
    # float32 data are summed in float64, exactly where the oracle is: same tolerance.
    _check(x, y, None, rtol=1e-12)
    present = torch.rand(6, m, generator=gen) < 0.7
    present[0] = False  # a dataset with no points: nan
    xb, yb = x.masked_fill(~present, torch.nan), y.masked_fill(~present, torch.inf)
    _check(xb, yb, present, rtol=1e-12)


def test_large_offsets_and_many_points_keep_their_digits():
    # 1e6 points at an offset of 1e8: naive one-pass sums lose everything,
    # and one accumulator chain of 1e6 additions loses several digits.
    gen = torch.Generator().manual_seed(3)
    x = 1e8 + torch.randn(2, 1_000_000, generator=gen, dtype=torch.float64)
    y = x + torch.randn(2, 1_000_000, generator=gen, dtype=torch.float64)
    _check(x, y, None, rtol=1e-13)


def test_blocks_merged_across_a_trend_at_a_large_offset():
    # Rows of several blocks (the kernel's BLOCK is 1024 points) whose means
    # differ by far more than their spread: sorted x at an offset of 1e8, and
    # a mask that leaves a block empty. Merging the blocks' sums must keep the
    # digits (their means' difference is taken about the first-pass means).
    gen = torch.Generator().manual_seed(12)
    m = 5000
    x = 1e8 + torch.linspace(0, 1, m, dtype=torch.float64).expand(3, m).clone()
    y = 3 * x + 1e-3 * torch.randn(3, m, generator=gen, dtype=torch.float64)
    _check(x, y, None, rtol=1e-12)
    present = torch.ones(3, m, dtype=torch.bool)
    present[0, 1024:2048] = False  # the second block absent
    present[1, ::3] = False
    present[2, :4000] = False  # only the tail
    _check(x, y, present, rtol=1e-12)
    _check(x.float(), y.float(), present, rtol=1e-12)


def test_float32_at_the_ends_of_its_range():
    # Squares of 1e-30 and 1e30 leave float32; the kernel's float64 holds them.
    gen = torch.Generator().manual_seed(4)
    base = torch.randn(2, 50, generator=gen, dtype=torch.float64)
    for scale in (1e-30, 1e30, 3e37):
        x = (base * scale).float()
        y = (2 * base * scale + 0.1 * scale * torch.randn(2, 50, generator=gen, dtype=torch.float64)).float()
        _check(x, y, None, rtol=1e-12)


def test_broadcast_rows_and_batch_dims():
    gen = torch.Generator().manual_seed(5)
    x = torch.randn(40, generator=gen, dtype=torch.float64)
    y = torch.randn(3, 4, 40, generator=gen, dtype=torch.float64)
    xb = x.expand(3, 4, 40)  # row stride 0
    assert native.line_sums(xb, y, None)[0].shape == (3, 4)
    _check(xb, y, None, rtol=1e-12)


def test_inputs_are_not_changed_and_threads_agree():
    gen = torch.Generator().manual_seed(6)
    # 63 datasets on 2 threads: 32 and 31 (uneven shares, the last row written too)
    x = torch.randn(63, 4096, generator=gen)
    y = torch.randn(63, 4096, generator=gen)
    present = torch.rand(63, 4096, generator=gen) < 0.5
    before = [t.clone() for t in (x, y, present)]
    _check(x.double(), y.double(), present, rtol=1e-12)  # every row, against fsum
    one, two = _on_one_and_two_threads(lambda: native.line_sums(x, y, present))
    for a, b in zip(one, two):  # each dataset is summed by one thread: bit for bit
        assert torch.equal(a, b)
    assert all(torch.equal(a, b) for a, b in zip(before, (x, y, present)))


def _on_one_and_two_threads(call):
    """``call()`` with torch (and so the kernels) on one thread, then on two."""
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one = call()
        torch.set_num_threads(2)
        return one, call()
    finally:
        torch.set_num_threads(threads)


def test_calls_the_kernel_cannot_serve_take_the_torch_route(monkeypatch):
    gen = torch.Generator().manual_seed(7)
    x = torch.randn(4, 30, generator=gen, dtype=torch.float64)
    y = 1 + 2 * x + torch.randn(4, 30, generator=gen, dtype=torch.float64)
    assert native.line_sums(x, y, None) is not None
    # autograd must record the call, unless grad is off
    xg = x.clone().requires_grad_()
    assert native.line_sums(xg, y, None) is None
    with torch.no_grad():
        assert native.line_sums(xg, y, None) is not None
    # points not contiguous; other dtypes; no points at all
    assert native.line_sums(x.mT.contiguous().mT, y.mT.contiguous().mT, None) is None
    assert native.line_sums(x.half(), y.half(), None) is None
    assert native.line_sums(x[:, :0], y[:, :0], None) is None
    # inside torch.func transforms
    seen = []

    def one(a, b):
        seen.append(native.line_sums(a, b, None))
        return a.sum()

    torch.func.vmap(one)(x, y)
    torch.func.grad(one)(x[0], y[0])
    assert seen == [None, None]
    # switched off
    monkeypatch.setenv("LOSSFN_NATIVE", "0")
    assert native.line_sums(x, y, None) is None and not native.available()


def test_fits_agree_on_both_routes_and_autograd_still_works(monkeypatch):
    gen = torch.Generator().manual_seed(8)
    x = torch.randn(5, 200, generator=gen, dtype=torch.float64)
    y = 1 + 2 * x + torch.randn(5, 200, generator=gen, dtype=torch.float64)
    fast = fit.ols(x, y)
    monkeypatch.setenv("LOSSFN_NATIVE", "0")
    slow = fit.ols(x, y)
    for field, a, b in zip(fast._fields, fast, slow):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-14, msg=field)
    monkeypatch.delenv("LOSSFN_NATIVE")
    xg = x.clone().requires_grad_()
    fit.ols(xg, y).slope.sum().backward()
    assert torch.isfinite(xg.grad).all()


def test_no_compiler_warns_once_and_fits_still_work(monkeypatch, tmp_path):
    monkeypatch.setenv("LOSSFN_CACHE_DIR", str(tmp_path))
    x = torch.arange(10.0)
    y = 3 * x + 1
    for compiler, reason in [(str(tmp_path / "no-such-cc"), "no C compiler found"), ("false", "failed")]:
        monkeypatch.setenv("CC", compiler)
        native._library.cache_clear()
        try:
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                assert not native.available()
                res = fit.ols(x, y)  # the cached failure: no second warning
            assert len(caught) == 1 and caught[0].category is RuntimeWarning
            assert reason in str(caught[0].message) and "LOSSFN_NATIVE=0" in str(caught[0].message)
            assert res.ok and res.slope.item() == pytest.approx(3.0)
        finally:
            native._library.cache_clear()
    assert list(tmp_path.iterdir()) == []  # no half-written library left behind


def test_builds_into_the_cache_directory(monkeypatch, tmp_path):
    monkeypatch.setenv("LOSSFN_CACHE_DIR", str(tmp_path))
    native._library.cache_clear()
    try:
        assert native.available()
        built = list(tmp_path.glob("kernels-*.so"))
        assert len(built) == 1
    finally:
        native._library.cache_clear()


def test_a_home_that_cannot_be_written_falls_back_to_a_private_temporary_directory(monkeypatch, tmp_path):
    blocked = tmp_path / "not-a-directory"
    blocked.write_text("")
    monkeypatch.delenv("LOSSFN_CACHE_DIR", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(blocked))
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "tmp"))
    native._library.cache_clear()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # no warning: the fallback works
            assert native.available()
        built = list((tmp_path / "tmp").glob("lossfn-*/kernels-*.so"))
        assert len(built) == 1 and (built[0].parent.stat().st_mode & 0o777) == 0o700
    finally:
        native._library.cache_clear()


# --- centred_gram: the Gram matrices of several predictors ---------------------------


def _gram_oracle(x: np.ndarray, y: np.ndarray, keep: np.ndarray, means=None, transform=None):
    """float64 numpy: means of the kept points (unless given), Gram of T^T (z - means)."""
    z = np.c_[x, y][keep].astype(np.float64)
    mu = z.mean(0) if means is None else means
    q = (z - mu) if transform is None else (z - mu) @ transform
    return mu, q.T @ q


def _check_gram(x, y, present=None, means=None, transform=None, rtol=1e-12):
    got = native.centred_gram(x, y, present, means=means, transform=transform)
    assert got is not None
    got_means, got_gram = got
    m, d = x.shape[-2:]
    k = d + 1
    assert got_means.shape == y.shape[:-1] + (k,) and got_gram.shape == y.shape[:-1] + (k, k)
    assert torch.equal(got_gram, got_gram.mT)  # exactly symmetric
    xs, ys = x.reshape(-1, m, d).numpy(), y.reshape(-1, m).numpy()
    keep = np.ones_like(ys, dtype=bool) if present is None else present.reshape(-1, m).numpy()
    gm, gg = got_means.reshape(-1, k).numpy(), got_gram.reshape(-1, k, k).numpy()
    for r in range(ys.shape[0]):
        if not keep[r].any():  # no points: means 0/0, an empty sum of products
            assert np.isnan(gm[r]).all() and (gg[r] == 0).all()
            continue
        mu, gram = _gram_oracle(xs[r], ys[r], keep[r],
                                None if means is None else means.reshape(-1, k)[r].numpy(),
                                None if transform is None else transform.reshape(-1, k, k)[r].numpy())
        diag = np.sqrt(np.diag(gram))
        np.testing.assert_allclose(gm[r], mu, rtol=1e-13, atol=1e-13 * np.abs(xs[r][keep[r]]).max())
        assert (np.abs(gg[r] - gram) <= rtol * np.outer(diag, diag) + 1e-300).all(), (r, gg[r], gram)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("d", [1, 2, 3, 4, 5, 7, 8, 9, 20, 24, 63])
def test_gram_against_numpy(dtype, d):
    gen = torch.Generator().manual_seed(d)
    m = 300  # one full chunk of 256 points and a part
    x = (50 + torch.randn(4, m, d, generator=gen, dtype=torch.float64)).to(dtype)
    y = (x.double().sum(-1) + torch.randn(4, m, generator=gen, dtype=torch.float64)).to(dtype)
    _check_gram(x, y)
    present = torch.rand(4, m, generator=gen) < 0.6
    present[1] = False
    xb = x.masked_fill(~present.unsqueeze(-1), torch.nan)
    yb = y.masked_fill(~present, -torch.inf)
    _check_gram(xb, yb, present)
    # given means (zeros: no centring) and a transform (the second pass of CholeskyQR2)
    zeros = torch.zeros(4, d + 1, dtype=torch.float64)
    _check_gram(x, y, means=zeros)
    means, gram = native.centred_gram(x, y, None)
    t = torch.linalg.inv(torch.linalg.cholesky(gram, upper=True))
    _check_gram(x, y, means=means, transform=t, rtol=1e-11)
    # a transform without given means: the kernel declines (computed means are
    # corrected in the untransformed space), and the caller takes the torch route
    assert native.centred_gram(x, y, None, transform=t) is None


@pytest.mark.parametrize("m", [1, 2, 3, 255, 256, 257, 1000])
def test_gram_point_counts(m):
    gen = torch.Generator().manual_seed(m)
    x = torch.randn(3, m, 3, generator=gen, dtype=torch.float64)
    y = torch.randn(3, m, generator=gen, dtype=torch.float64)
    _check_gram(x, y)


@pytest.mark.parametrize("d", [1, 3, 4, 5, 9])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_gram_of_rows_far_from_their_first_points(dtype, d):
    # Rows of up to 40 KB are centred in one pass about the mean of their
    # first 32 present points, which keeps the two passes' accuracy while
    # that centre is near the mean; a trend or a level shift puts it far off,
    # and the row is passed again about the mean the first pass found.
    gen = torch.Generator().manual_seed(30 + d)
    m = 400
    t = torch.arange(m, dtype=torch.float64)
    x = 1e4 + torch.randn(4, m, d, generator=gen, dtype=torch.float64)
    x[0] += t.unsqueeze(-1) * torch.rand(d, generator=gen, dtype=torch.float64)  # a trend
    x[1, 32:] += 100  # a level shift after the first 32 points
    y = x.sum(-1) + torch.randn(4, m, generator=gen, dtype=torch.float64)
    y[2, :40] -= 1e3  # the response alone off centre
    x, y = x.to(dtype), y.to(dtype)
    _check_gram(x, y)  # row 3: random, one pass
    present = torch.rand(4, m, generator=gen) < 0.7
    _check_gram(x, y, present)
    # The first 32 points 1e3 spreads off: about them, the sums' rounding
    # would be (1 + 11) times the two passes' (3e-15 of G); checked to 2e-14.
    x = 1e4 + torch.randn(2, m, d, generator=gen, dtype=torch.float64)
    x[:, :32] += 1e3
    y = x.sum(-1) + torch.randn(2, m, generator=gen, dtype=torch.float64)
    if dtype == torch.float64:
        _check_gram(x, y, rtol=2e-14)


def test_gram_of_integer_data_rounds_without_bias():
    # float64 integers (timestamps, counts) have few significant bits: about a
    # centre with few bits too (a sum of 32 points over 32), every product
    # rounded the same way, 30-35 eps of G_ii; about the mean of 31 points,
    # as about the true mean, a few eps. Oracle: exact rational arithmetic.
    from fractions import Fraction

    rng = np.random.default_rng(3)
    v = np.round(1.7e9 + rng.standard_normal((3, 800, 6)) * 2.6e5)
    _, gram = native.centred_gram(torch.tensor(v[..., :5]), torch.tensor(v[..., 5]), None)
    eps = np.finfo(np.float64).eps
    for r in range(3):
        for i in range(6):
            column = [int(a) for a in v[r, :, i]]
            exact = Fraction(sum(a * a for a in column)) - Fraction(sum(column) ** 2, len(column))
            assert abs(Fraction(gram[r, i, i].item()) - exact) <= 8 * eps * exact, (r, i)


@pytest.mark.parametrize("d", [1, 4, 5, 9])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_gram_of_rows_that_take_the_means_pass(dtype, d):
    # Rows over 40 KB get their means in a pass of their own first.
    gen = torch.Generator().manual_seed(40 + d)
    m = 6001
    x = (1e3 + torch.randn(2, m, d, generator=gen, dtype=torch.float64)).to(dtype)
    y = (x.double().sum(-1) + torch.randn(2, m, generator=gen, dtype=torch.float64)).to(dtype)
    _check_gram(x, y)
    present = torch.rand(2, m, generator=gen) < 0.5
    _check_gram(x, y, present)


@contextlib.contextmanager
def _before_a_guard_page(count: int, dtype: torch.dtype):
    """A tensor of ``count`` elements that ends right before a page the process
    may not read: a load past its last element crashes the test."""
    import ctypes
    import mmap

    page = mmap.PAGESIZE
    size = torch.empty((), dtype=dtype).element_size()
    assert count * size <= page
    libc = ctypes.CDLL(None)
    region = mmap.mmap(-1, 2 * page)
    base = ctypes.addressof(ctypes.c_char.from_buffer(region))
    assert libc.mprotect(ctypes.c_void_p(base + page), page, 0) == 0  # PROT_NONE
    try:
        yield torch.frombuffer(region, dtype=dtype, count=count, offset=page - count * size)
    finally:
        libc.mprotect(ctypes.c_void_p(base + page), page, 3)  # read/write again
        region.close()


def test_gram_reads_nothing_past_the_last_point():
    for dtype in (torch.float32, torch.float64):
        for d in (1, 2, 3, 4, 5, 7, 9, 17):
            m = 11
            with _before_a_guard_page(m * d, dtype) as x:
                x.copy_(torch.arange(m * d, dtype=dtype) % 7)
                x = x.view(1, m, d)
                y = torch.arange(m, dtype=dtype).view(1, m)
                _check_gram(x, y)
                _check_gram(x, y, torch.ones(1, m, dtype=torch.bool))
                del x


def test_line_sums_read_nothing_past_the_last_point():
    # x, y and the mask each end right before a guard page; row lengths around
    # the kernel's vectors of 8 and its unrolled steps of 16 and 32.
    gen = torch.Generator().manual_seed(10)
    for dtype in (torch.float32, torch.float64):
        for m in (1, 7, 8, 9, 15, 16, 17, 31, 33, 40):
            values = torch.randn(3, 2, m, generator=gen, dtype=torch.float64).to(dtype)
            present = torch.rand(2, m, generator=gen) < 0.7
            with _before_a_guard_page(2 * m, dtype) as x, _before_a_guard_page(2 * m, dtype) as y, \
                    _before_a_guard_page(2 * m, torch.bool) as mask:
                x.copy_(values[0].flatten())
                y.copy_(values[1].flatten())
                mask.copy_(present.flatten())
                x, y, mask = x.view(2, m), y.view(2, m), mask.view(2, m)
                _check(x, y, None, rtol=1e-12)
                _check(x, y, mask, rtol=1e-12)
                del x, y, mask


def test_gram_broadcast_rows_threads_and_routing():
    gen = torch.Generator().manual_seed(9)
    # a design shared by every dataset; enough work for two threads (lossfn._native)
    x = torch.randn(2000, 4, generator=gen, dtype=torch.float64).expand(41, 2000, 4)
    y = torch.randn(41, 2000, generator=gen, dtype=torch.float64)
    one, two = _on_one_and_two_threads(lambda: native.centred_gram(x, y, None))
    assert all(torch.equal(a, b) for a, b in zip(one, two))
    threads = torch.get_num_threads()
    try:  # 41 datasets on 2 threads: 21 and 20, every row checked against numpy
        torch.set_num_threads(2)
        _check_gram(x, y)
    finally:
        torch.set_num_threads(threads)
    # not served: too many columns, points not contiguous rows, autograd
    assert native.centred_gram(torch.zeros(2, 5, 64, dtype=torch.float64), torch.zeros(2, 5, dtype=torch.float64), None) is None
    assert native.centred_gram(x.mT.contiguous().mT, y, None) is None
    assert native.centred_gram(x.clone().requires_grad_(), y, None) is None


# --- review findings: calls that must not reach the kernels, and a cache that lies -----


def _line(seed=1, m=20):
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(3, m, generator=gen, dtype=torch.float64)
    return x, 1 + 2 * x + torch.randn(3, m, generator=gen, dtype=torch.float64)


def _linregress_slopes(x, y):
    import scipy.stats

    return torch.tensor([scipy.stats.linregress(a.numpy(), b.numpy()).slope for a, b in zip(x, y)],
                        dtype=torch.float64)


def test_a_default_device_elsewhere_changes_nothing():
    # Outputs allocated on the default device (meta here; cuda elsewhere) once
    # received the kernel's writes: a segmentation fault.
    x, y = _line()
    with torch.device("meta"):
        res = fit.ols(x, y)
        multi = fit.ols(x.unsqueeze(-1), y)
    torch.testing.assert_close(res.slope, _linregress_slopes(x, y), rtol=1e-12, atol=0)
    torch.testing.assert_close(multi.slope[:, 0], _linregress_slopes(x, y), rtol=1e-10, atol=0)
    # The robust fits' kernels: against the same calls outside the device context.
    for f in (fit.lad, fit.huber):
        with torch.device("meta"):
            elsewhere = f(x, y)
        for a, b in zip(elsewhere, f(x, y)):
            assert a.device.type == "cpu"
            torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_forward_mode_autograd_keeps_its_tangents():
    import torch.autograd.forward_ad as fwAD

    x, y = _line()
    with fwAD.dual_level():
        slope = fit.ols(fwAD.make_dual(x, x.clone()), y).slope
        tangent = fwAD.unpack_dual(slope).tangent
    # d/dε slope(x·(1 + ε)) = −slope
    torch.testing.assert_close(tangent, -_linregress_slopes(x, y), rtol=1e-10, atol=0)


def test_jit_trace_and_zero_tensors_take_the_torch_route():
    x, y = _line()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # jit.trace's own deprecation and tracer warnings
        traced = torch.jit.trace(lambda a, b: fit.ols(a, b).slope, (x, y))
    x2, y2 = _line(seed=2)
    torch.testing.assert_close(traced(x2, y2), _linregress_slopes(x2, y2), rtol=1e-12, atol=0)
    zero = torch._efficientzerotensor((3, 20), dtype=torch.float64)
    assert native.line_sums(zero, y, None) is None
    assert not fit.ols(zero, y).ok.any()  # constant x


def _in_a_new_process(code: str, cache: str, **env) -> "subprocess.CompletedProcess":
    """Run ``code`` in a fresh interpreter: a library this process has loaded
    must not be truncated under it (that is a SIGBUS of its own)."""
    import os
    import subprocess
    import sys

    environment = {**os.environ, "LOSSFN_CACHE_DIR": cache, **env}
    environment.pop("LOSSFN_NATIVE", None)
    return subprocess.run([sys.executable, "-W", "always", "-c", code], env=environment,
                          capture_output=True, text=True, timeout=300, check=False)


CHECK = """
import torch, lossfn._native as native
from lossfn import fit
ok = native.available()
x = torch.arange(12.0, dtype=torch.float64).reshape(2, 6)
print(ok, fit.ols(x, 3 * x + 1).slope.tolist())
"""


def test_a_truncated_library_in_the_cache_is_rebuilt(tmp_path):
    # Loading a truncated shared library kills the process (SIGBUS); the
    # checksum written after each build keeps it from being loaded.
    cache = str(tmp_path)
    first = _in_a_new_process(CHECK, cache)
    assert first.returncode == 0 and first.stdout.split()[0] == "True", first.stderr
    (library,) = tmp_path.glob("kernels-*.so")
    whole = library.read_bytes()
    library.write_bytes(whole[:4096])
    again = _in_a_new_process(CHECK, cache)
    assert again.returncode == 0, again.stderr  # was -7 (SIGBUS)
    assert again.stdout.split()[0] == "True" and library.read_bytes() == whole
    assert "[3.0, 3.0]" in again.stdout.replace(" ", "").replace(",", ", ")
    # A compiler that exits 0 without writing anything is refused (and says so);
    # once it works again the library is built. A compiler with arguments works.
    library.unlink()
    broken = _in_a_new_process(CHECK, cache, CC="true")
    assert broken.returncode == 0 and broken.stdout.split()[0] == "False"
    assert "no library written" in broken.stderr
    fixed = _in_a_new_process(CHECK, cache, CC="cc -std=c11")
    assert fixed.returncode == 0 and fixed.stdout.split()[0] == "True"
    assert len(list(tmp_path.glob("kernels-*.so"))) == 1  # its own key: the compiler is part of it


def test_line_fit_fields_are_contiguous_and_overflow_is_not_ok(monkeypatch):
    # The record's fields come from one buffer: each must still be contiguous,
    # as the torch route's are (stderr.view(-1) once raised). And sums that
    # overflow (Syy = inf, slope·Sxy = inf: SSR = inf − inf) must fail the fit,
    # whether or not the compiler fuses Syy − b·Sxy into one FMA.
    res = fit.ols(torch.randn(3, 4, 10, dtype=torch.float64), torch.randn(3, 4, 10, dtype=torch.float64))
    for field in res:
        assert field.is_contiguous()
    assert res.stderr.view(-1).shape == (24,)
    x = torch.tensor([[0.0, 1.0, 2.0, 3.0]], dtype=torch.float64)
    y = torch.tensor([[0.0, 2e154, 1e154, 3e154]], dtype=torch.float64)
    out = native.line_fit(x, y, None)
    assert out is not None and not out[-1].any() and torch.isnan(out[1]).all()


PORTABLE = """
import torch, lossfn._native as native
from lossfn import fit
assert native.available()
x = torch.tensor([[0.0, 1.0, 2.0, 3.0]], dtype=torch.float64)
y = torch.tensor([[0.0, 2e154, 1e154, 3e154]], dtype=torch.float64)
print(bool(native.line_fit(x, y, None)[-1].any()))
g = torch.Generator().manual_seed(8)
X = torch.randn(5, 300, 3, generator=g, dtype=torch.float64)
Y = X.sum(-1) + torch.randn(5, 300, generator=g, dtype=torch.float64) ** 3
for res in (fit.ols(X[..., 0], Y), fit.ols(X, Y), fit.huber(X, Y), fit.huber(X[..., 0].float(), Y.float())):
    print(*[f"{v:.17g}" for v in res.slope.double().flatten().tolist()])
"""


def test_a_build_without_fma_or_avx_gives_the_same_fits(tmp_path):
    # The kernels compiled for baseline x86-64 (no FMA, SSE2 vectors), as on a
    # machine without them or with CC="cc -march=x86-64": overflowed sums still
    # fail the fit (without an FMA, Syy − b·Sxy is inf − inf = nan, which a
    # clamp at 0 once turned into an exact fit with ok=True), and the fits
    # agree with this process's build to rounding.
    import platform

    if platform.machine() not in ("x86_64", "AMD64"):
        pytest.skip("an x86-64 baseline build")
    run = _in_a_new_process(PORTABLE, str(tmp_path), CC="cc -march=x86-64")
    assert run.returncode == 0, run.stderr
    first, *slopes = run.stdout.splitlines()
    assert first == "False"
    g = torch.Generator().manual_seed(8)
    X = torch.randn(5, 300, 3, generator=g, dtype=torch.float64)
    Y = X.sum(-1) + torch.randn(5, 300, generator=g, dtype=torch.float64) ** 3
    here = (fit.ols(X[..., 0], Y), fit.ols(X, Y), fit.huber(X, Y), fit.huber(X[..., 0].float(), Y.float()))
    for line, res, tol in zip(slopes, here, (1e-13, 1e-12, 1e-8, 1e-5)):
        theirs = torch.tensor([float(v) for v in line.split()], dtype=torch.float64)
        torch.testing.assert_close(theirs, res.slope.double().flatten(), rtol=tol, atol=tol)
