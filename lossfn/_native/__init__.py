"""Native kernels: fused passes over the data, compiled from C on first use.

torch runs a fit's passes one operator at a time: each one reads the data
from memory and writes a temporary back. A kernel that makes every pass over
one dataset while it is in cache reads the data once (``kernels.c``,
``ols.c``, ``huber.c``, ``lad.c``):

* :func:`line_sums`, the centred moments of one predictor and the response
  (``fit.standardized``), and :func:`line_fit`, the same sums and the whole
  ``fit.ols`` record after them (one predictor with an intercept): a whole
  ``fit.ols`` call 2.5-4x faster than the pure-torch route from about 100
  points per dataset, and, accumulated in float64, more accurate in float32,
  where no sum can over- or underflow;
* :func:`ols_fit`, ``fit.ols`` with several predictors: the Gram matrix of
  each dataset in one pass (``kernels.c``), then its solve and the whole
  record, eight datasets to a vector while their Gram matrices are in cache
  (``ols.c``; :func:`ols_record` alone, from given Gram matrices): 4-8x
  faster than the torch route at 1000 datasets of 500 points. Float64
  datasets that one pass does not serve to 12 digits (ill-conditioned
  designs, nearly exact fits) are flagged for CholeskyQR2's second pass,
  which :func:`centred_gram` makes (:mod:`lossfn.fit._solve`);
* :func:`huber` and :func:`lad`, the whole iterations of ``fit.huber`` and
  ``fit.lad`` one dataset at a time (``huber.c``, ``lad.c``, sharing
  ``robust.h``), each stopping when it is done: 4-8x faster than the torch
  route, which runs every dataset of a batch in lockstep for ``max_iter``
  steps.

(``benchmarks/fits.py`` and ``benchmarks/robust.py`` measure them against the
pure-torch route, side by side with the peers.)

The kernels are an accelerator for the plain eager case, never a requirement:
:func:`line_sums`, :func:`line_fit`, :func:`centred_gram`, :func:`ols_fit`,
:func:`ols_record`, :func:`huber` and :func:`lad` return None, and the caller
runs its pure-torch path, whenever the kernels cannot serve the call exactly:

* a ``torch.func`` transform is active (``vmap``, ``grad``, ...), autograd
  must record the call (backward or forward mode), or torch is tracing it
  (``torch.compile``, export, ``torch.jit.trace``): the torch path composes
  with all of them;
* the data are not plain float32/float64 CPU tensors whose batch dims flatten
  to one row stride, with the points contiguous;
* the environment variable ``LOSSFN_NATIVE`` is ``0``;
* no C compiler is available (``$CC``, else ``cc``; ``$CC`` may carry
  arguments, which come after lossfn's own and so win, as in
  ``CC="cc -march=x86-64-v2"``): then a RuntimeWarning says so once per
  process, and everything still works, only slower.

The shared library is built with ``cc -O3 -march=native``
(``-march=native`` dropped if the compiler refuses it) into
``$LOSSFN_CACHE_DIR``, else ``$XDG_CACHE_HOME/lossfn`` (``~/.cache/lossfn``),
else a private ``lossfn-<uid>`` in the temporary directory; its name holds a
hash of the source, the compiler and the CPU, so a changed source or a home
directory shared with another machine never loads a stale or foreign build,
and a checksum written after each build keeps a truncated file (which would
crash the process that loads it) from ever being loaded: it is rebuilt.
Building takes a few seconds, once per machine.
"""

from __future__ import annotations

import ctypes
import os
from typing import Optional

import torch

from ._build import library as _library

__all__ = ["available", "line_sums", "line_fit", "centred_gram", "ols_record", "ols_fit", "huber",
           "lad", "MAX_COLUMNS", "MAX_COEFFICIENTS"]

#: Most columns of ``[X y]`` that :func:`centred_gram` takes (``KMAX`` in gram.h).
MAX_COLUMNS = 64

#: Most coefficients (intercept included) that :func:`huber` and :func:`lad` take (``PMAX`` in robust.h).
MAX_COEFFICIENTS = 64


def enabled() -> bool:
    """False where the environment variable ``LOSSFN_NATIVE`` is ``0``."""
    return os.environ.get("LOSSFN_NATIVE", "1") != "0"


def available() -> bool:
    """True if the kernels are enabled and built (building them now if needed)."""
    return enabled() and _library() is not None


def _plain(t: Optional[torch.Tensor]) -> bool:
    """A CPU tensor whose memory the kernels may read: no subclass, wrapper or view bit."""
    return t is None or (
        type(t) is torch.Tensor
        and t.device.type == "cpu"
        and t.layout == torch.strided
        and not torch._C._functorch.is_functorch_wrapped_tensor(t)
        and not t.is_neg()
        and not t._is_zerotensor()  # no memory behind it
    )


def _rows(t: Optional[torch.Tensor], m: int) -> Optional[torch.Tensor]:
    """``t`` as (rows, m) with contiguous points, as a view; None if it is none."""
    if t.dim() == 2:  # as it is: a view op costs tens of µs with cold caches
        flat = t
    else:
        try:
            flat = t.view(-1, m)
        except RuntimeError:
            return None
    return flat if m <= 1 or flat.stride(1) == 1 else None


def _eligible(*tensors: Optional[torch.Tensor]) -> bool:
    if not enabled() or torch._C._are_functorch_transforms_active():
        return False
    if torch.compiler.is_compiling() or torch.jit.is_tracing():
        return False
    if torch.autograd.forward_ad._current_level >= 0:  # inside fwAD.dual_level(): tangents
        return False
    if torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in tensors):
        return False
    return all(_plain(t) for t in tensors)


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
    out = torch.empty(rows, 6, dtype=torch.float64, device="cpu")  # not the default device
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
    cpu64 = {"dtype": torch.float64, "device": "cpu"}  # not the default device
    means = (torch.empty(rows, k, **cpu64) if means is None
             else means.to(**cpu64).reshape(rows, k).contiguous())
    out = torch.empty(rows, k, k, **cpu64)
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
        transform = transform.to(dtype=torch.float64, device="cpu").reshape(rows, k, k).contiguous()
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
    zeros = None if intercept else torch.zeros(batch + (d + 1,), dtype=torch.float64, device="cpu")
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


#: Arguments of the robust kernels: float64 on the CPU, whatever the default device is.
_CPU64 = {"dtype": torch.float64, "device": "cpu"}


def _robust_call(design, response, weight, *others):
    """``(library, x, y, w, batch)`` for the robust fits' kernels (``robust.h``):
    the standardized problem as contiguous float64 (rows, m, p) and (rows, m),
    or None where they cannot serve the call. ``others`` are the call's other
    tensors, checked for eligibility."""
    m, p = design.shape[-2], design.shape[-1]
    if design.dtype not in (torch.float32, torch.float64) or m == 0 or not 1 <= p <= MAX_COEFFICIENTS:
        return None
    if not _eligible(design, response, weight, *others):
        return None
    lib = _library()
    if lib is None:
        return None
    x = design.to(**_CPU64).reshape(-1, m, p).contiguous()
    y = response.to(**_CPU64).reshape(-1, m).contiguous()
    w = weight.to(**_CPU64).reshape(-1, m).contiguous()
    return lib, x, y, w, response.shape[:-1]


def _robust_threads(rows: int, m: int, p: int) -> int:
    """A fit takes about 30 ns per point and coefficient (12 µs at 200 points
    and 2): threads only where each gets ~100 µs, well past the cost of
    starting it (a block of 256 such datasets: up to 25 threads)."""
    return max(1, min(torch.get_num_threads(), rows * m * p // (1 << 12)))


def huber(
    design: torch.Tensor,
    response: torch.Tensor,
    weight: torch.Tensor,
    delta: torch.Tensor,
    scale: Optional[torch.Tensor],
    *,
    max_iter: int,
    tol: float,
):
    """Huber regression of standardized datasets, one at a time in cache, or None.

    The iteration of :func:`lossfn.fit.huber` (``huber.c``) on the problem that
    :func:`lossfn.fit._prepare.standardize` makes: ``design`` (..., m, p),
    ``response`` and ``weight`` (..., m), absent points' rows zero and weight
    0; ``delta`` and ``scale`` broadcast to the batch shape (...), ``scale``
    None to estimate it by the MAD rule, else in the response's standardized
    units. Returns ``(beta (..., p), scale, iterations, converged, full_rank)``
    with float64 and int64/bool tensors; ``full_rank`` is the rule of
    :func:`lossfn.fit._prepare.independent_rows` in the design's dtype's eps.
    None where the kernels cannot serve the call (see the module) or ``p``
    exceeds :data:`MAX_COEFFICIENTS`.
    """
    call = _robust_call(design, response, weight, delta, scale)
    if call is None:
        return None
    lib, x, y, w, batch = call
    rows, m, p = x.shape

    def per_dataset(value: torch.Tensor) -> torch.Tensor:
        return value.to(**_CPU64).expand(batch).reshape(rows).contiguous()

    delta = per_dataset(delta)
    scale = None if scale is None else per_dataset(scale)
    beta, s = torch.empty(rows, p, **_CPU64), torch.empty(rows, **_CPU64)
    iterations = torch.empty(rows, dtype=torch.int64, device="cpu")
    converged = torch.empty(rows, dtype=torch.bool, device="cpu")
    full_rank = torch.empty(rows, dtype=torch.bool, device="cpu")
    info = torch.finfo(design.dtype)
    # Datasets stop as they converge: a cap beyond int64 (max_iter is any int) changes nothing.
    status = lib.lossfn_huber(
        x.data_ptr(), y.data_ptr(), w.data_ptr(), delta.data_ptr(),
        None if scale is None else scale.data_ptr(), rows, m, p, min(max_iter, 2**62), tol,
        info.eps, info.tiny, beta.data_ptr(), s.data_ptr(), iterations.data_ptr(),
        converged.data_ptr(), full_rank.data_ptr(), _robust_threads(rows, m, p),
    )
    if status != 0:  # out of scratch memory
        return None
    return (beta.view(batch + (p,)), s.view(batch), iterations.view(batch),
            converged.view(batch), full_rank.view(batch))


def lad(design: torch.Tensor, response: torch.Tensor, walk: torch.Tensor, weight: torch.Tensor, *,
        max_iter: int):
    """LAD regression of standardized datasets, one at a time in cache, or None.

    The vertex walk of :func:`lossfn.fit.lad` (``lad.c``) on the problem that
    :func:`lossfn.fit._prepare.standardize` makes (``design``, ``response``,
    ``weight`` as for :func:`huber`); ``walk`` (..., m) is the perturbed
    response the walk runs on (1 at absent points). Returns ``(beta (..., p),
    objective, u_max, iterations, full_rank)``: the coefficients at the final
    vertex, ``Σ|r|`` over the present points (standardized units), the
    certificate's largest multiplier (optimal iff ``≤ 1 + eps**0.75``), the
    exchanges made, and the rank rule with priorities ``|r|`` of the IRLS
    start. None where the kernels cannot serve the call.
    """
    call = _robust_call(design, response, weight, walk)
    if call is None:
        return None
    lib, x, y, w, batch = call
    rows, m, p = x.shape
    walk = walk.to(**_CPU64).reshape(-1, m).contiguous()
    beta = torch.empty(rows, p, **_CPU64)
    objective, u_max = torch.empty(rows, **_CPU64), torch.empty(rows, **_CPU64)
    iterations = torch.empty(rows, dtype=torch.int64, device="cpu")
    full_rank = torch.empty(rows, dtype=torch.bool, device="cpu")
    info = torch.finfo(design.dtype)
    status = lib.lossfn_lad(
        x.data_ptr(), y.data_ptr(), walk.data_ptr(), w.data_ptr(), rows, m, p,
        min(max_iter, 2**62), info.eps, info.tiny, beta.data_ptr(), objective.data_ptr(),
        u_max.data_ptr(), iterations.data_ptr(), full_rank.data_ptr(), _robust_threads(rows, m, p),
    )
    if status != 0:  # out of scratch memory
        return None
    return (beta.view(batch + (p,)), objective.view(batch), u_max.view(batch),
            iterations.view(batch), full_rank.view(batch))
