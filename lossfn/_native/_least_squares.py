"""The least-squares kernels' wrappers: one predictor's sums and record
(``kernels.c``), the Gram matrices of several (``kernels.c``) and the record
after them (``ols.c``). See :mod:`lossfn._native` for when they serve a call."""

from __future__ import annotations

import ctypes
from typing import Optional

import torch

from ._build import library as _library
from ._calls import CPU64 as _CPU64
from ._calls import eligible as _eligible
from ._calls import rows as _rows

__all__ = ["line_sums", "line_fit", "centred_gram", "ols_fit", "ols_record", "MAX_COLUMNS"]

#: Most columns of ``[X y]`` that :func:`centred_gram` takes (``KMAX`` in gram.h).
MAX_COLUMNS = 64


def _line_call(x: torch.Tensor, y: torch.Tensor, present: Optional[torch.Tensor]):
    """``(library, data arguments, rows, threads)`` for the one-predictor kernels,
    or None where they cannot serve the call. The data arguments are those
    that both take first: dtype, then x, y and the mask as (rows, m) row views
    (pointer and row stride each), rows and m."""
    m = y.shape[-1]
    if x.dtype not in (torch.float32, torch.float64) or y.dtype != x.dtype or m == 0:
        return None
    if not _eligible(x, y, present):
        return None
    fx, fy, fm = [_rows(t, m) if t is not None else None for t in (x, y, present)]
    if fx is None or fy is None or (present is not None and fm is None):
        return None
    lib = _library()
    if lib is None:
        return None
    rows = fy.shape[0]
    arguments = (int(x.dtype == torch.float64), fx.data_ptr(), fx.stride(0), fy.data_ptr(),
                 fy.stride(0), None if fm is None else fm.data_ptr(),
                 0 if fm is None else fm.stride(0), rows, m)
    # Threads only where each gets enough work to pay for starting it.
    return lib, arguments, rows, max(1, min(torch.get_num_threads(), rows * m // (1 << 16)))


def line_sums(x: torch.Tensor, y: torch.Tensor, present: Optional[torch.Tensor]):
    """Centred moments of one predictor and the response, per dataset, or None.

    ``x``, ``y`` (..., m) of one dtype, ``present`` None or bool (..., m), all
    broadcast to one shape already. Returns float64 tensors (...,)
    ``(mean_x, mean_y, Sxx, Sxy, Syy)`` over the present points (nan where
    none is), or None where the kernels cannot serve the call (see the module).
    """
    found = _line_call(x, y, present)
    if found is None:
        return None
    lib, arguments, rows, threads = found
    out = torch.empty(rows, 6, **_CPU64)
    lib.lossfn_line_sums(*arguments, out.data_ptr(), threads)
    return tuple(column.view(y.shape[:-1]) for column in out.unbind(-1)[:5])  # n: not asked for


def line_fit(x: torch.Tensor, y: torch.Tensor, present: Optional[torch.Tensor]):
    """The record of ``fit.ols`` with one predictor and an intercept, or None.

    :func:`line_sums` and the arithmetic after it in one call: the ~50 small
    torch operations that turn the sums into the record cost as much as the
    kernel itself on short batches (and more with cold caches). ``x``, ``y``,
    ``present`` as :func:`line_sums`. Returns ``(intercept, slope, sigma2,
    stderr (..., 2), r2, n, ok)`` in ``y``'s dtype (``n`` int64, ``ok``
    bool), nan in the float fields of a dataset that is not ok; None where
    the kernels cannot serve the call.
    """
    found = _line_call(x, y, present)
    if found is None:
        return None
    lib, arguments, rows, threads = found
    batch = y.shape[:-1]
    # On the CPU whatever the default device is. Few tensor ops: each costs tens
    # of µs with cold caches (a fit between other work), as much as the kernel
    # on 100 datasets of 10000 points.
    fields = _fields(batch, batch, 2, x.dtype)
    ok = torch.empty(batch, dtype=torch.bool, device="cpu")
    count = torch.empty(batch, dtype=torch.int64, device="cpu")
    info = torch.finfo(x.dtype)
    if lib.lossfn_line_fit(*arguments, info.eps, info.tiny, _pointers(fields), ok.data_ptr(),
                           count.data_ptr(), threads) != 0:
        return None  # out of memory for the sums
    intercept, slope, sigma2, r2, stderr = fields
    return intercept, slope, sigma2, stderr, r2, count, ok


def _fields(batch, slope, p: int, dtype: torch.dtype):
    """The record kernels' float fields, each its own tensor in its final shape
    (a split of one buffer and views of it cost more, ~40 µs more with cold
    caches): intercept, slope (of shape ``slope``), sigma2, r2, stderr (batch + (p,))."""
    def empty(shape):
        return torch.empty(shape, dtype=dtype, device="cpu")  # whatever the default device
    return empty(batch), empty(slope), empty(batch), empty(batch), empty(batch + (p,))


def _pointers(tensors) -> "ctypes.Array":
    """A C array of the tensors' data pointers (``void *const *``)."""
    return (ctypes.c_void_p * len(tensors))(*(t.data_ptr() for t in tensors))


def _gram_call(x: torch.Tensor, y: torch.Tensor, present: Optional[torch.Tensor],
               means: Optional[torch.Tensor], transform: Optional[torch.Tensor]):
    """``(library, data arguments, means, out, threads)`` for the Gram kernels
    (``centred_gram``, ``ols_fit``), or None where they cannot serve the call.
    The data arguments are dtype, x (rows, m, d), y and the mask as pointers
    and row strides, rows, m, d and whether the means are given; ``means``
    (rows, k) and ``out`` (rows, k, k) are the float64 tensors they write."""
    m, d = x.shape[-2], x.shape[-1]
    if x.dtype not in (torch.float32, torch.float64) or y.dtype != x.dtype or m == 0:
        return None
    if not 1 <= d < MAX_COLUMNS or not _eligible(x, y, present, means, transform):
        return None
    try:
        fx = x.view(-1, m, d)
    except RuntimeError:
        return None
    if fx.stride(-1) != 1 or fx.stride(-2) != d:  # points must be contiguous rows of d values
        return None
    fy = _rows(y, m)
    fm = None if present is None else _rows(present, m)
    if fy is None or (present is not None and fm is None):
        return None
    lib = _library()
    if lib is None:
        return None
    rows, k = fy.shape[0], d + 1
    given = means is not None
    means = (torch.empty(rows, k, **_CPU64) if means is None
             else means.to(**_CPU64).reshape(rows, k).contiguous())
    out = torch.empty(rows, k, k, **_CPU64)
    arguments = (int(x.dtype == torch.float64), fx.data_ptr(), fx.stride(0), fy.data_ptr(),
                 fy.stride(0), None if fm is None else fm.data_ptr(),
                 0 if fm is None else fm.stride(0), rows, m, d, int(given))
    threads = max(1, min(torch.get_num_threads(), rows * m * k // (1 << 16)))
    return lib, arguments, means, out, threads


def centred_gram(
    x: torch.Tensor,
    y: torch.Tensor,
    present: Optional[torch.Tensor],
    *,
    means: Optional[torch.Tensor] = None,
    transform: Optional[torch.Tensor] = None,
):
    """Gram matrices of the centred ``[X y]``, per dataset, or None.

    ``x`` (..., m, d), ``y`` (..., m) of one dtype, ``present`` None or bool
    (..., m), batch dims broadcast already. With ``z_t = [x_t y_t] − means``
    over the present points and ``q_t = Tᵀz_t``, returns float64
    ``(means (..., k), Σ q_t q_tᵀ (..., k, k))``, ``k = d + 1``: ``means`` are
    the column means unless given (zeros: no centring), ``T`` (..., k, k) is
    upper triangular, the identity unless given (the second pass of
    CholeskyQR2, :mod:`lossfn.fit._solve`; only with given means). None where
    the kernels cannot serve the call (see the module) or ``k`` exceeds
    :data:`MAX_COLUMNS`.
    """
    call = _gram_call(x, y, present, means, transform)
    if call is None:
        return None
    lib, arguments, means, out, threads = call
    rows, k = out.shape[:2]
    if transform is not None:
        transform = transform.to(**_CPU64).reshape(rows, k, k).contiguous()
    status = lib.lossfn_centred_gram(
        *arguments, None if transform is None else transform.data_ptr(), means.data_ptr(),
        out.data_ptr(), threads,
    )
    if status != 0:  # out of scratch memory, or a transform without given means
        return None
    batch = y.shape[:-1]
    return means.view(batch + (k,)), out.view(batch + (k, k))


def ols_fit(
    x: torch.Tensor,
    y: torch.Tensor,
    present: Optional[torch.Tensor],
    *,
    intercept: bool,
    one_pass_error: Optional[float],
):
    """:func:`centred_gram` and :func:`ols_record` in one call (``ols.c``), or None.

    Each group of 8 datasets gets its record right after its Gram matrices,
    while they are in cache: one pass over the data and one call for the
    whole fit where one pass serves. ``x``, ``y``, ``present`` as for
    :func:`centred_gram` (the means are computed with an intercept, zero
    without); the data's dtype and precision are the fields' and the rank
    rule's. Returns ``(record, n, again, means, gram)``: :func:`ols_record`'s
    record, the int64 counts of present points (...), ``again``, then
    :func:`centred_gram`'s output, for the datasets that ``again`` sends to a
    second pass.
    """
    batch, d = y.shape[:-1], x.shape[-1]
    zeros = None if intercept else torch.zeros(batch + (d + 1,), **_CPU64)
    call = _gram_call(x, y, present, zeros, None)
    if call is None:
        return None
    lib, arguments, means, out, threads = call
    rows, k = out.shape[:2]
    fields, ok, again = _record_outputs(d, intercept, x.dtype, batch, one_pass_error)
    n = torch.empty(batch, dtype=torch.int64, device="cpu")
    info = torch.finfo(x.dtype)
    status = lib.lossfn_ols_fit(
        *arguments, means.data_ptr(), out.data_ptr(), n.data_ptr(), int(intercept), info.eps,
        info.tiny, int(again is not None), one_pass_error or 0.0, _pointers(fields),
        ok.data_ptr(), None if again is None else again.data_ptr(), threads,
    )
    if status != 0:  # out of scratch memory
        return None
    return (_record(fields, ok), n, again, means.view(batch + (k,)), out.view(batch + (k, k)))


def _record_outputs(d: int, intercept: bool, dtype: torch.dtype, batch, test: Optional[float]):
    """The record kernels' outputs: the fields, ok, and again (None without a test)."""
    fields = _fields(batch, batch + (d,), d + int(intercept), dtype)
    ok = torch.empty(batch, dtype=torch.bool, device="cpu")
    again = None if test is None else torch.zeros(batch, dtype=torch.bool, device="cpu")
    return fields, ok, again


def _record(fields, ok: torch.Tensor):
    """``(intercept, slope, sigma2, stderr, r2, ok)`` from the record kernels' outputs."""
    intercept, slope, sigma2, r2, stderr = fields
    return intercept, slope, sigma2, stderr, r2, ok


def ols_record(
    gram: torch.Tensor,
    means: torch.Tensor,
    n: torch.Tensor,
    *,
    intercept: bool,
    dtype: torch.dtype,
    data_eps: float,
    one_pass_error: Optional[float],
):
    """The record of ``fit.ols`` with several predictors from :func:`centred_gram`'s
    output (``ols.c``), or None.

    ``gram`` (..., k, k) and ``means`` (..., k) float64 as :func:`centred_gram`
    gives them (means of zeros without an intercept), ``n`` (...) the present
    points; ``dtype`` the data's, which the fields take; ``data_eps`` the
    data's precision. The solve is one Cholesky factorization of the scaled
    Gram matrix, as :func:`lossfn.fit._solve.solve_grams` after one pass.
    With ``one_pass_error`` (float64 data), the datasets that one pass does not
    serve to that relative error are flagged (the rule of
    :data:`lossfn.fit._solve.ONE_PASS_ERROR`); their fields are not final.
    Returns ``((intercept, slope (..., d), sigma2, stderr (..., p), r2, ok),
    again)``, ``again`` a bool tensor (...) or None without ``one_pass_error``;
    None where the kernels cannot serve the call.
    """
    k = gram.shape[-1]
    d = k - 1
    if not 1 <= d < MAX_COLUMNS or not _eligible(gram, means, n):
        return None
    lib = _library()
    if lib is None:
        return None
    batch = gram.shape[:-2]
    gram = gram.to(**_CPU64).reshape(-1, k, k).contiguous()
    means = means.to(**_CPU64).reshape(-1, k).contiguous()
    count = n.to(**_CPU64).expand(batch).reshape(-1).contiguous()
    rows = gram.shape[0]
    fields, ok, again = _record_outputs(d, intercept, dtype, batch, one_pass_error)
    # About k³/3 multiply-adds per dataset: threads only for ~100 µs of work each.
    threads = max(1, min(torch.get_num_threads(), rows * k**3 // (1 << 18)))
    status = lib.lossfn_ols_record(
        gram.data_ptr(), means.data_ptr(), count.data_ptr(), rows, d, int(intercept),
        int(dtype == torch.float64), data_eps, torch.finfo(dtype).tiny, int(again is not None),
        one_pass_error or 0.0, _pointers(fields), ok.data_ptr(),
        None if again is None else again.data_ptr(), threads,
    )
    if status != 0:
        return None
    return _record(fields, ok), again
