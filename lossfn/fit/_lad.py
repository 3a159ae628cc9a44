"""Least absolute deviations (LAD): the exact maximum-likelihood line under Laplace noise.

Under ``yᵢ = xᵢᵀβ + εᵢ`` with ``εᵢ ~ Laplace(b)`` the negative log-likelihood is
``Σ|yᵢ − xᵢᵀβ|/b + m·log 2b``, so the MLE of ``β`` minimizes ``Σ|rᵢ|`` whatever
``b`` is, and then ``b̂ = Σ|rᵢ|/m``. The objective is convex and piecewise
linear; its minimum is attained at a vertex, a ``β`` at which ``p`` points with
linearly independent rows (``p`` = number of coefficients) have zero residual.

The solver walks from vertex to vertex (Barrodale & Roberts, 1973), all datasets
in lockstep:

1. start from 16 IRLS steps (weights ``1/|rᵢ|``), then take the ``p`` independent points of
   smallest residual as the basis ``J`` (so ``β = X_J⁻¹ y_J``);
2. certificate: ``β`` is optimal iff there are ``uⱼ ∈ [−1, 1]`` on the basis with
   ``Σ_{i∉J} sign(rᵢ) xᵢ + Σ_{j∈J} uⱼ xⱼ = 0`` (the subgradient of ``Σ|rᵢ|``
   contains 0). ``u = −X_J⁻ᵀ Σ_{i∉J} sign(rᵢ) xᵢ`` is unique;
3. otherwise release the basis point ``j`` with the largest ``|uⱼ|``: along the
   edge ``β + t·d`` with ``X_J d = −sign(uⱼ) eⱼ`` the objective has slope
   ``1 − |uⱼ| < 0`` and is convex piecewise linear in ``t``; its exact minimizer
   is a weighted median of the breakpoints ``rᵢ/aᵢ > 0`` (``aᵢ = xᵢᵀd``, weights
   ``2|aᵢ|``), found by ranking the 4 nearest breakpoints and a prefix sum
   (beyond them the step stops at the 4th: still a vertex and a descent). The
   point there replaces ``j`` (Barrodale–Roberts pass through several vertices
   in one step this way).

Every step lowers the objective or, at a degenerate vertex, keeps it; the count
of steps is fixed (``max_iter``) and datasets already optimal stand still, so
the routine has no data-dependent control flow and runs under ``torch.func.vmap``.
``β`` is recomputed from its basis at every step, so no rounding accumulates.
Memory is ``O(m·p)`` per dataset.

On the CPU, outside ``torch.func`` transforms and autograd, the same walk runs
in C, one dataset at a time while it is in cache (:func:`lossfn._native.lad`):
the same rules step by step, but each dataset stops as soon as its
certificate holds instead of running ``max_iter`` exchanges in lockstep.

References:
    I. Barrodale, F. D. K. Roberts (1973), An improved algorithm for discrete
    l1 linear approximation, SIAM J. Numer. Anal. 10(5), 839–848.
    R. Koenker (2005), Quantile Regression, Cambridge University Press, ch. 6.
"""

from __future__ import annotations

from typing import NamedTuple, Optional

import torch
from einops import rearrange

from .. import _native
from .._checks import check_fit_options
from ._prepare import (blank_where, fit_in_blocks, independent_rows, representable, standardize,
                       unstandardize)
from ._wls import fitted, project, wls_step

__all__ = ["LADFit", "lad"]

#: IRLS steps (weights 1/|r|) that produce the starting point of the vertex walk.
_IRLS_STEPS = 16

#: Crossings ranked per line search (see :func:`_exchange`). On the benchmark's
#: data 4 need as few exchanges as 16: the minimizer is rarely further out.
_NEAREST = 4

#: Entries per group in the two-level selection of :func:`_nearest`.
_GROUP = 8


class LADFit(NamedTuple):
    """Result of :func:`lad`, one entry per dataset.

    Attributes:
        intercept: ``(...)``; 0 when fitted without intercept.
        slope: ``(...)`` for simple regression, ``(..., d)`` for multiple.
        objective: ``Σ|yᵢ − ŷᵢ|`` over the present points ``(...)``; divided by
            the number of points it is the Laplace scale MLE ``b̂``.
        iterations: basis exchanges made ``(...)`` (0 where rank-deficient).
        ok: the optimality certificate holds ``(...)``. False in three cases:
            the design is rank-deficient (constant x, fewer points than
            coefficients, all masked), and then the other fields are nan;
            ``max_iter`` exchanges did not reach the optimum, and then the fields
            describe the last vertex, whose objective is an upper bound; or a
            coefficient lies outside the dtype's range (it overflows, or
            underflows below ``tiny/8`` and takes the intercept with it).
    """

    intercept: torch.Tensor
    slope: torch.Tensor
    objective: torch.Tensor
    iterations: torch.Tensor
    ok: torch.Tensor


def _vertex(X: torch.Tensor, y: torch.Tensor, rows: torch.Tensor):
    """``β = X_J⁻¹ y_J`` and ``X_J⁻¹`` for the basis ``rows``."""
    p = X.shape[-1]
    XJ = X.gather(-2, rows.unsqueeze(-1).expand(rows.shape + (p,)))
    inverse, info = torch.linalg.inv_ex(XJ)
    eye = torch.eye(p, dtype=X.dtype, device=X.device)
    inverse = torch.where((info == 0)[..., None, None], inverse, eye)
    beta = (inverse @ y.gather(-1, rows).unsqueeze(-1)).squeeze(-1)
    return beta, inverse


def _residuals(X, Xt, y, rows):
    """``β``, ``X_J⁻¹`` and the residuals at the vertex, exactly 0 on the basis."""
    beta, inverse = _vertex(X, y, rows)
    r = (y - fitted(Xt, beta)).scatter(-1, rows, 0.0)
    return beta, inverse, r


def _certificate(X, Xt, y, rows, zero_tol, tie_break):
    """Residuals at the vertex and the multipliers ``u`` of the optimality test.

    Non-basic residuals within ``zero_tol`` of zero take the sign of
    ``tie_break`` (the perturbed problem's residuals): any value in [−1, 1] is
    a valid subgradient there, and those signs are the ones the walk used.
    """
    beta, inverse, r = _residuals(X, Xt, y, rows)
    sign = torch.where(r.abs() <= zero_tol, torch.sign(tie_break), torch.sign(r))
    s = project(X, sign.scatter(-1, rows, 0.0))
    u = -(inverse.transpose(-1, -2) @ s.unsqueeze(-1)).squeeze(-1)
    return beta, r, u


def _nearest(rate: torch.Tensor, k: int):
    """The ``k`` largest of ``rate.clamp(min=0)`` over the last dim, largest first, and their indices.

    Two-level selection: the ``k`` largest lie in the ``k`` groups (of
    ``_GROUP`` entries) with the largest maxima, so one pass takes the group
    maxima and the rest ranks ``k`` groups only: ~2x cheaper on the CPU than
    ``topk`` over all ``m`` entries (measured at m = 200, k = 4).
    """
    rate = rate.clamp(min=0)
    m = rate.shape[-1]
    if m <= 4 * k * _GROUP:
        return rate.topk(k, dim=-1)
    pad = -m % _GROUP
    if pad:  # below every clamped rate: never ranked ahead of an entry
        rate = torch.nn.functional.pad(rate, (0, pad), value=-1.0)
    # Group b holds entries b, b + n, b + 2n, ... (n = m / G): the maxima are
    # then a reduction over a leading axis, the fastest layout for it.
    groups = rate.unflatten(-1, (_GROUP, -1))  # (..., G, n)
    n = groups.shape[-1]
    best = groups.amax(-2).topk(k, dim=-1).indices  # (..., k) groups
    members = groups.gather(-1, best.unsqueeze(-2).expand(best.shape[:-1] + (_GROUP, k)))
    values, at = members.flatten(-2).topk(k, dim=-1)  # at = row·k + column
    return values, (at // k) * n + best.gather(-1, at % k)


def _exchange(X, Xt, y, rows, u_tol):
    """One basis exchange for every dataset that is not yet optimal.

    The walk's response is 1 on masked points, whose design rows are 0: their
    residual is 1 and their ``aᵢ`` is 0 at every vertex, so they never cross
    zero, never enter the basis, and add ``1·0`` to every sum.
    """
    _, inverse, r = _residuals(X, Xt, y, rows)
    s = project(X, torch.sign(r))
    u = -(inverse.transpose(-1, -2) @ s.unsqueeze(-1)).squeeze(-1)
    size, j = u.abs().max(-1, keepdim=True)
    # Release basis point j: X_J d = -sign(u_j) e_j, so a_j = -sign(u_j).
    col = inverse.gather(-1, j.unsqueeze(-2).expand(inverse.shape[:-1] + (1,)))
    d = -torch.sign(u.gather(-1, j)) * col.squeeze(-1)
    a = fitted(Xt, d).scatter(-1, rows, 0.0)
    # Along the edge β + t·d the slope starts at 1 - |u_j| and grows by 2|a_i|
    # as each residual r_i - t·a_i crosses zero, at t = r_i/a_i > 0. Ranking
    # the crossings by a_i/r_i (largest first; basis rows give 0/1) needs no
    # branch. Only the _NEAREST first are ranked; if the minimizer lies
    # further out the step stops at the last ranked crossing: still a vertex,
    # still a descent.
    rate, order = _nearest(a / r.scatter(-1, rows, 1.0), min(_NEAREST, r.shape[-1]))
    climbed = a.gather(-1, order).abs().cumsum(-1)
    first = (climbed < (size - 1) / 2).sum(-1, keepdim=True).clamp(max=order.shape[-1] - 1)
    move = (size > 1 + u_tol) & (rate.gather(-1, first) > 0)
    moved = rows.scatter(-1, j, order.gather(-1, first))
    return torch.where(move, moved, rows), move.squeeze(-1)


def lad(
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    mask: Optional[torch.Tensor] = None,
    intercept: bool = True,
    max_iter: Optional[int] = None,
) -> LADFit:
    r"""Exact least-absolute-deviations regression of many datasets at once.

    Minimizes :math:`\sum_i |y_i - \alpha - x_i^\top\beta|` over the present
    points of each dataset: the maximum-likelihood line under Laplace noise
    (the conditional median). The result is a vertex of the linear programme,
    exact up to rounding, with an optimality certificate (see the module
    docstring); where the optimum is not unique, one optimal vertex is returned.

    Args:
        x: ``(..., m)`` for simple regression or ``(..., m, d)`` for multiple.
        y: ``(..., m)`` responses; same dtype as ``x``.
        mask: optional bool, broadcastable to ``(..., m)``; False marks points
            that do not exist (their values are never read).
        intercept: fit ``α`` (default) or force the line through the origin.
        max_iter: most basis exchanges per dataset. Heavy-tailed and
            contaminated data need few (about 5 at m = 200, d = 5); degenerate
            vertices, as integer responses on equally spaced or integer
            designs give, need about ``m/15`` as ``m`` grows. The native route
            (see :mod:`lossfn.fit`) stops each dataset when it is done, and
            its default ``8 + 2p + m // 8`` (``p`` coefficients, ``m``
            points) is about twice the most seen on either. The torch route
            runs every dataset for ``max_iter`` exchanges in lockstep, so its
            default is the tighter ``8 + p·(2 + m // 150)``, twice what
            non-degenerate data need: degenerate walks at m of 1000 and more
            may then stop short. Datasets that need more are returned with
            ``ok=False``, never silently: refit them with a larger ``max_iter``.

    Returns:
        :class:`LADFit` with fields of batch shape ``(...)`` (``slope`` has a
        trailing ``d`` for multiple regression).

    On the CPU's torch route a large batch runs in blocks of 256 datasets,
    whose working set stays in cache; the result is the same as one call.

    Example:
        >>> import torch
        >>> from lossfn.fit import lad
        >>> x = torch.tensor([0.0, 1.0, 2.0, 3.0, 4.0], dtype=torch.float64)
        >>> y = torch.tensor([1.0, 3.0, 5.0, 7.0, 100.0], dtype=torch.float64)
        >>> fit = lad(x, y)             # the outlier at x = 4 does not move the line
        >>> [round(v.item(), 12) for v in (fit.intercept, fit.slope, fit.objective)]
        [1.0, 2.0, 91.0]
    """
    check_fit_options("lad", intercept, max_iter)
    return fit_in_blocks(_lad, LADFit, "lad", x, y, mask, {},
                         intercept=intercept, max_iter=max_iter)


def _lad(x, y, *, mask, intercept, max_iter):
    """:func:`lad` for one block of datasets."""
    std, simple = standardize("lad", x, y, mask, intercept)
    X, yy, w = std.design, std.response, std.weight
    p = X.shape[-1]
    m = X.shape[-2]
    eps = torch.finfo(X.dtype).eps
    u_tol = eps ** 0.75  # rounding allowance of the certificate |u_j| <= 1

    # Degenerate vertices (more than p zero residuals, common with integer or
    # collinear data) can make basis exchange cycle. The walk therefore runs on
    # y + ε·ξ with a fixed irregular ξ, which has none (the classical
    # perturbation method); its optimal basis is optimal for y up to O(ε·m),
    # and the certificate below is checked on y itself.
    # ξ must not be a polynomial in the index (a Weyl sequence i·φ mod 1 is
    # linear, and collinear with equally spaced designs): a sine hash.
    index = torch.arange(1, X.shape[-2] + 1, dtype=torch.float64, device=X.device)
    hashed = torch.sin(index * 12.9898) * 43758.5453
    xi = (hashed - hashed.floor() - 0.5).to(X.dtype)
    # Masked points get response 1 in the walk (their rows are 0): see _exchange.
    walk_y = yy + eps ** (2 / 3) * xi * w + (1 - w)

    native = _native.lad(X, yy, walk_y, w, max_iter=8 + 2 * p + m // 8 if max_iter is None else max_iter)
    if native is None:
        lockstep = 8 + p * (2 + m // 150) if max_iter is None else max_iter  # see lad's max_iter
        beta, objective, u_max, iterations, full_rank = _walk(X, yy, walk_y, w, max_iter=lockstep)
    else:  # the same walk, dataset by dataset in C (lossfn/_native/lad.c)
        beta, objective, u_max, iterations, full_rank = native
        beta, objective, u_max = beta.to(X.dtype), objective.to(X.dtype), u_max.to(X.dtype)
    full_rank = full_rank & std.informative
    objective = objective * std.y_scale
    # A nan or inf in a present point has sign 0 or ±1 and would pass the
    # certificate: a usable fit also needs finite numbers.
    usable = full_rank & torch.isfinite(objective) & torch.isfinite(beta).all(-1)
    ok = usable & (u_max <= 1 + u_tol)
    iterations = torch.where(usable, iterations, 0)
    icpt, slope = unstandardize(beta, std, intercept, simple)
    ok = ok & representable(beta, icpt, slope, simple)
    icpt, slope, objective = blank_where(~usable, icpt, slope, objective)
    return LADFit(icpt, slope, objective, iterations, ok)


def _walk(X, yy, walk_y, w, *, max_iter):
    """The start and the vertex walk of :func:`lad` in torch, on the standardized problem.

    Returns ``(beta, objective, u_max, iterations, full_rank)``: the final
    vertex, ``Σ|r|`` over the present points, the certificate's largest
    ``|u_j|``, the exchanges made and the rank rule.
    """
    eps = torch.finfo(X.dtype).eps
    floor = eps ** 0.5  # IRLS weight cap: 1/|r| for |r| above ~1e-8 of the spread
    zero_tol = eps ** 0.75  # |r| this small (in units of y's spread) is a zero
    u_tol = eps ** 0.75  # rounding allowance of the certificate |u_j| <= 1
    # Feature-major copy: the batched products below read it contiguously.
    Xt = rearrange(X, "... m p -> ... p m").contiguous()
    beta = wls_step(X, Xt, yy, w, torch.zeros_like(X[..., 0, :]))
    for _ in range(_IRLS_STEPS):
        r = yy - fitted(Xt, beta)
        beta = wls_step(X, Xt, yy, w / r.abs().clamp(min=floor), beta)
    r = yy - fitted(Xt, beta)
    rows, full_rank = independent_rows(X, w, r.abs())

    iterations = torch.zeros_like(full_rank, dtype=torch.long)
    for _ in range(max_iter):
        rows, moved = _exchange(X, Xt, walk_y, rows, u_tol)
        iterations = iterations + moved.long()

    walked = _residuals(X, Xt, walk_y, rows)[2] * w
    beta, r, u = _certificate(X, Xt, yy, rows, zero_tol, walked)
    return beta, (w * r.abs()).sum(-1), u.abs().amax(-1), iterations, full_rank
