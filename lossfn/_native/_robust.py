"""The robust fits' kernels' wrappers: ``fit.huber`` (``huber.c``) and
``fit.lad`` (``lad.c``), one standardized dataset at a time. See
:mod:`lossfn._native` for when they serve a call."""

from __future__ import annotations

from typing import Optional

import torch

from ._build import library as _library
from ._calls import CPU64 as _CPU64
from ._calls import eligible as _eligible

__all__ = ["huber", "lad", "MAX_COEFFICIENTS"]

#: Most coefficients (intercept included) that :func:`huber` and :func:`lad` take (``PMAX`` in robust.h).
MAX_COEFFICIENTS = 64


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
