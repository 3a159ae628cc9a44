r"""Huber M-estimation of a regression: the MLE under Huber's noise model.

With ``εᵢ = yᵢ − xᵢᵀβ`` distributed with Huber's density of threshold ``δ`` and
scale ``s`` (see :class:`lossfn.Huber`), the negative log-likelihood is
``Σ ρ_δ(rᵢ/s) + m·log(s·Z(δ))``, so for a given scale the MLE of ``β`` minimizes

.. math:: \sum_i \rho_\delta\!\left(\frac{y_i - x_i^\top\beta}{s}\right),\qquad
          \rho_\delta(u) = \begin{cases} u^2/2 & |u| \le \delta \\
          \delta|u| - \delta^2/2 & |u| > \delta \end{cases}

i.e. it solves ``Σ ψ_δ(rᵢ/s) xᵢ = 0`` with ``ψ_δ(u) = clip(u, −δ, δ)``. Each
iteration takes the better (lower objective) of two steps that share the
right-hand side ``Xᵀψ``: the iteratively-reweighted-least-squares step
(weights ``min(1, δ·s/|rᵢ|)``, which always descends; Huber & Ronchetti 2009,
§7.8) and the Newton step (weights 1 on the inliers ``|rᵢ| ≤ δ·s``, 0 on the
rest), which lands exactly on the minimizer once it sees the final inlier set.

When the scale is not given it is estimated jointly, with the rule of
statsmodels' ``RLM(M=HuberT(t=δ)).fit()`` default (``scale_est="mad"``): start
from ordinary least squares and its ``s₀ = median|rᵢ| / Φ⁻¹(3/4)`` (the MAD
about **zero**, statsmodels' ``mad(resid, center=0)``, not about the median of
the residuals); after each step ``s = median|rᵢ(β)| / Φ⁻¹(3/4)`` of the new
residuals. The estimate is the fixed point: ``β`` minimizes ``Σ ρ_δ(rᵢ/s)`` at
the scale ``s`` that its own residuals give, which is what RLM returns when
run to convergence. RLM gets there by plain alternation; here the scale
iteration is Aitken-extrapolated where it runs straight (see
:func:`_extrapolate`), which changes the path, not the fixed point.

The median of ``|r|`` is a full selection in the first steps and every eighth
one; in between it is tracked from the previous middle pair through a window
that the step cannot have left (:func:`lossfn.fit._prepare.tracked_middle_pair`,
exact by an order-statistic count, ~2x cheaper). Where the window is too
crowded to rank, the scale holds for that step, which then cannot count as
convergence: ``converged`` always rests on an exact median.

On the CPU, outside ``torch.func`` transforms and autograd, the same iteration
runs in C, one dataset at a time while it is in cache (:func:`lossfn._native.huber`):
each dataset stops as soon as it has converged (the torch route below runs
every dataset for ``max_iter`` steps, so that it has no data-dependent control
flow), and the median is an exact selection at every step. The paths differ by that; the
fixed point, and so the fit, agree to the tolerance. Both routes are tested
against statsmodels RLM.

References:
    P. J. Huber (1964), Robust estimation of a location parameter, Ann. Math.
    Statist. 35(1), 73–101. P. J. Huber, E. M. Ronchetti (2009), Robust
    Statistics, 2nd ed., Wiley, §7.8.
"""

from __future__ import annotations

from typing import NamedTuple, Optional, Union

import torch
from einops import rearrange

from .. import _native
from .._checks import check_fit_options
from ..location import MAD_TO_SIGMA
from ._prepare import (
    MiddlePair,
    blank_where,
    fit_in_blocks,
    independent_rows,
    middle_pair,
    middle_ranks,
    representable,
    standardize,
    tracked_middle_pair,
    unstandardize,
)
from ._wls import column_products, fitted, weighted_solves, wls_step

__all__ = ["HuberFit", "huber"]

#: Steps whose scale update selects the median of all |r|; later steps track it
#: (:func:`lossfn.fit._prepare.tracked_middle_pair`), ~2x cheaper. From the
#: third step on (of 6 to 13 to convergence on the benchmark's data) the window
#: holds few enough entries to rank for more than 98% of the datasets.
_SELECTIONS = 3

#: Every so many steps a full selection again, so that a dataset whose median
#: could not be tracked (a window too wide) is not left without an exact one.
_ANCHOR = 8


class HuberFit(NamedTuple):
    """Result of :func:`huber`, one entry per dataset.

    Attributes:
        intercept: ``(...)``; 0 when fitted without intercept.
        slope: ``(...)`` for simple regression, ``(..., d)`` for multiple.
        scale: the scale ``s`` used at the end ``(...)`` (estimated or given).
        iterations: steps until convergence (``max_iter`` if never) ``(...)``.
        converged: the last step changed ``β`` (in units of the standardized
            problem) and ``s`` by at most ``tol`` relative, with ``s`` from an
            exact median ``(...)``.
        ok: full column rank, positive scale, converged, and coefficients
            inside the dtype's range ``(...)``. Where the design is
            rank-deficient (constant x, fewer points than coefficients, all
            masked) ``intercept``, ``slope`` and ``scale`` are nan.
    """

    intercept: torch.Tensor
    slope: torch.Tensor
    scale: torch.Tensor
    iterations: torch.Tensor
    converged: torch.Tensor
    ok: torch.Tensor


def _objective_of_abs(a: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
    """``Σ ρ_c(rᵢ)`` from ``a = |r|``: the Huber objective at scale 1 and threshold ``c = δ·s``."""
    inner = torch.minimum(a, c)
    return torch.linalg.vecdot(inner, torch.add(a, inner, alpha=-0.5))


def _extrapolate(d, rho_before, safe_before, run, s_new):
    """Aitken's Δ² jump of the scale iteration, taken only on a straight stretch.

    With ``β`` re-solved at each scale, ``g(s) = median|r(β(s))|/Φ⁻¹(3/4)`` is
    piecewise linear in ``s``: within a fixed inlier set ``β(s)`` is linear in
    ``s``, and so is one order statistic of ``|r|``. On one piece the steps
    ``dₖ = sₖ − sₖ₋₁`` shrink by a constant ratio ``ρ = g'``, and the fixed point
    is ``s_new + d·ρ/(1 − ρ)``. Two equal successive ratios (three plain,
    nonzero steps: ``run ≥ 2`` before this one) are the evidence of a straight
    stretch; across a kink they differ and the plain iteration goes on. The
    plain iteration verifies the result either way: a jump never counts as
    convergence.

    ``d`` is this plain step, ``rho_before`` the ratio of the last two,
    ``safe_before`` the last step (1 where it was 0), ``run`` the plain nonzero
    steps in a row before this one. Each ratio is computed once and carried.

    Returns the next scale, the new ``rho``, ``safe`` and ``run``.
    """
    moved = d != 0
    rho = d / safe_before
    size = rho.abs()
    straight = (run >= 2) & (size <= 0.95) & ((rho - rho_before).abs() <= 1e-3 * size)
    s_next = torch.where(straight, s_new + d * rho / (1 - rho), s_new)
    # A jump or a step of 0 (the scale held, or stood still) starts the count again.
    run = torch.where(straight | ~moved, 0, run + 1)
    return s_next, rho, torch.where(moved, d, 1.0), run


def huber(
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    delta: Union[float, torch.Tensor] = 1.345,
    scale: Union[None, float, torch.Tensor] = None,
    mask: Optional[torch.Tensor] = None,
    intercept: bool = True,
    max_iter: Optional[int] = None,
    tol: Optional[float] = None,
) -> HuberFit:
    r"""Huber M-estimate of a linear regression, many datasets at once.

    See the module docstring for the estimator. On the torch route every
    dataset runs exactly ``max_iter`` steps (no data-dependent control flow, so
    the call runs under ``torch.func.vmap``) and stands still once converged;
    the native route (see the module) stops each dataset when it converges.
    One that does not converge is flagged, never silently returned as if it had.

    Args:
        x: ``(..., m)`` for simple regression or ``(..., m, d)`` for multiple.
        y: ``(..., m)`` responses; same dtype as ``x``.
        delta: threshold ``δ`` in units of the scale (default 1.345, 95%
            efficiency at the normal, statsmodels' and sklearn's default);
            float or tensor broadcastable to the batch shape ``(...)``.
        scale: ``None`` to estimate ``s`` by RLM's rule, or a known ``s > 0``
            (float or tensor broadcastable to ``(...)``), held fixed.
        mask: optional bool, broadcastable to ``(..., m)``; False marks points
            that do not exist (their values are never read).
        intercept: fit an intercept (default) or force the line through 0.
        max_iter: most iterations per dataset. Default 10 with a
            fixed scale (at most 6 seen on heavy-tailed data), 20 with an
            estimated one (at most 13 on the benchmark's data). Where the scale
            iteration crosses a repelling stretch it can need more (RLM then
            needs hundreds); such datasets come back with ``converged=False``:
            refit them with a larger ``max_iter``.
        tol: relative convergence tolerance (default ``eps**0.6``: ``4e-10``
            in float64, ``7e-5`` in float32).

    Returns:
        :class:`HuberFit` with fields of batch shape ``(...)`` (``slope`` has a
        trailing ``d`` for multiple regression).

    Note:
        scikit-learn's ``HuberRegressor(epsilon=ε, alpha=0)`` minimizes
        ``Σ (σ + σ·H_ε(rᵢ/σ))`` jointly over ``(β, σ)``, with ``H_ε = 2ρ_ε``
        (Owen's concomitant scale, not the MAD). At its ``σ̂ = scale_`` its
        ``β̂`` minimizes ``Σ ρ_ε(rᵢ/σ̂)``: it equals ``huber(x, y, delta=ε,
        scale=σ̂)`` up to the accuracy at which its L-BFGS stops (~1e-5).

    On the CPU's torch route a large batch runs in blocks of 256 datasets,
    whose working set stays in cache; the result is the same as one call.

    Example:
        >>> import torch
        >>> from lossfn.fit import huber
        >>> x = torch.arange(8, dtype=torch.float64)
        >>> noise = torch.tensor([0.1, -0.1, 0.2, -0.2, 0.1, -0.1, 0.0, 30.0], dtype=torch.float64)
        >>> fit = huber(x, 1 + 2 * x + noise, scale=0.2)   # the outlier at x = 7 is downweighted
        >>> [round(v, 4) for v in (fit.intercept.item(), fit.slope.item())], bool(fit.ok)
        ([0.966, 2.0241], True)
    """
    if isinstance(scale, (int, float)) and not isinstance(scale, bool) and not scale > 0:
        raise ValueError(f"huber: scale must be > 0 or None (estimate it), got {scale}")
    if isinstance(delta, (int, float)) and not isinstance(delta, bool) and not delta > 0:
        raise ValueError(f"huber: delta must be > 0, got {delta}")
    check_fit_options("huber", intercept, max_iter)
    per_dataset = {"delta": delta, "scale": scale}
    return fit_in_blocks(_huber, HuberFit, "huber", x, y, mask, per_dataset,
                     intercept=intercept, max_iter=max_iter, tol=tol)


def _huber(x, y, *, mask, delta, scale, intercept, max_iter, tol):
    """:func:`huber` for one block of datasets."""
    std, simple = standardize("huber", x, y, mask, intercept)
    X, yy, w = std.design, std.response, std.weight
    eps = torch.finfo(X.dtype).eps
    if tol is None:
        tol = eps ** 0.6
    if max_iter is None:
        max_iter = 20 if scale is None else 10
    batch = yy.shape[:-1]
    delta_t = torch.as_tensor(delta, dtype=X.dtype, device=X.device).expand(batch)
    if scale is not None:
        scale = torch.as_tensor(scale, dtype=X.dtype, device=X.device).expand(batch) / std.y_scale
    native = _native.huber(X, yy, w, delta_t, scale, max_iter=max_iter, tol=tol)
    if native is None:
        _, full_rank = independent_rows(X, w, torch.zeros_like(w))
        beta, s, iterations, done = _iterate(X, yy, w, mask is not None, delta_t, scale,
                                             intercept=intercept, max_iter=max_iter, tol=tol)
    else:  # the same iteration, dataset by dataset in C (lossfn/_native/huber.c)
        beta, s, iterations, done, full_rank = native
        beta, s = beta.to(X.dtype), s.to(X.dtype)
    full_rank = full_rank & std.informative

    icpt, slope = unstandardize(beta, std, intercept, simple)
    s = s * std.y_scale
    # A tensor δ ≤ 0 (a float one raises in huber) is outside the domain: no fit.
    usable = full_rank & (delta_t > 0)
    icpt, slope, s = blank_where(~usable, icpt, slope, s)
    # A scale within rounding of 0 means more than half the points lie on the
    # fit (RLM warns and stops there); the estimate is then not meaningful.
    floor = 1000 * eps * std.y_scale if scale is None else 0.0
    ok = usable & done & (s > floor) & representable(beta, icpt, slope, simple)
    return HuberFit(icpt, slope, s, iterations, done, ok)


def _iterate(X, yy, w, masked, delta_t, scale, *, intercept, max_iter, tol):
    """The iteration of :func:`huber` in torch, on the standardized problem.

    ``scale`` is None (estimate it) or in the response's standardized units.
    Returns ``(beta, s, iterations, converged)``.
    """
    eps = torch.finfo(X.dtype).eps
    batch = yy.shape[:-1]
    present = w > 0 if masked else None

    def estimate_scale(pair: MiddlePair) -> torch.Tensor:
        return (0.5 * pair.lower + 0.5 * pair.upper) / MAD_TO_SIGMA

    # Masked points have zero rows and responses: their residual is 0 at every
    # β, so they add nothing to the sums below and need no weight of their own.
    # Feature-major copy: the batched products below read it contiguously.
    Xt = rearrange(X, "... m p -> ... p m").contiguous()
    beta = wls_step(X, Xt, yy, w, torch.zeros_like(X[..., 0, :]))
    r = yy - fitted(Xt, beta)
    a = r.abs()
    if scale is None:
        pair = middle_pair(a, present)
        s = estimate_scale(pair)
        ranks = middle_ranks(present, a)
    else:
        s = scale

    done = torch.zeros(batch, dtype=torch.bool, device=X.device)
    settled = torch.zeros_like(done, dtype=torch.long)  # steps begun already converged
    tiny = torch.finfo(X.dtype).tiny
    zero = X.new_zeros(())
    if scale is None:
        # The ratio of the last two plain steps of the scale, the last step
        # (1 where 0) and how many plain nonzero ones there have been in a row.
        rho, safe = torch.zeros_like(s), torch.ones_like(s)
        run = torch.zeros_like(settled)
    else:
        c = (delta_t * s).clamp(min=tiny).unsqueeze(-1)
        c_of_both = c.unsqueeze(-1)
        # The scale stands still: its part of the convergence test, once.
        scale_settled = (s - s).abs() <= tol * s
    products = column_products(X, unit_first=intercept)
    column_max = Xt.abs().amax(-1)  # (..., p)
    y_max = yy.abs().amax(-1)
    response = yy.unsqueeze(-2)
    p = X.shape[-1]
    beta_abs = beta.abs()
    for step_number in range(max_iter):
        if scale is None:
            c = (delta_t * s).clamp(min=tiny).unsqueeze(-1)
            c_of_both = c.unsqueeze(-1)
        # Both candidate steps solve (XᵀAX) Δ = Xᵀψ with ψ = clip(r, −c, c):
        # IRLS (A = min(1, c/|r|)) always descends; Newton (A = 1 on |r| ≤ c)
        # is exact once it sees the final inlier set. Keep the better one.
        # One product gives both Gram matrices and the right-hand side.
        # Exactly 1 on the inliers, < 1 off them (and 1 everywhere for c = inf).
        irls = torch.where(a <= c, 1.0, c / a)
        # ψ = clamp(r, −c, c); minimum/maximum run ~2x faster than clamp with tensor bounds.
        psi = torch.minimum(torch.maximum(r, -c), c)
        # With no inlier (c far below every residual: a tiny fixed scale) every
        # weight is tiny and p = 2's det G = O(c²) underflows to 0, a zero
        # step. Both systems divided by the largest present weight give the
        # same steps (Newton's is scaled back below).
        top = (irls if present is None else irls.masked_fill(~present, 0.0)).amax(-1, keepdim=True)
        top = torch.where(top > 0, top, 1.0)
        steps = weighted_solves(X, Xt, products, torch.stack(
            [irls / top, irls.floor(), psi / top], dim=-2))  # (..., 2, p): IRLS, Newton
        steps = steps * torch.stack([torch.ones_like(top), top], dim=-2)
        # Converged datasets stand still: a zero step leaves β and r exactly as they are.
        steps = torch.where(done[..., None, None], zero, steps)
        # Residuals of both candidates from the data, not carried as r − XΔ:
        # at an exact fit carried residuals shrink by eps a step, away from
        # the true ones, and the scale would follow them towards 0.
        trial = beta.unsqueeze(-2) + steps  # (..., 2, p)
        candidates = response - trial @ Xt  # (..., 2, m)
        objective = _objective_of_abs(candidates.abs(), c_of_both)
        better = (objective[..., 1] <= objective[..., 0]).unsqueeze(-1)
        new_beta = torch.where(better, trial[..., 1, :], trial[..., 0, :])
        r = torch.where(better, candidates[..., 1, :], candidates[..., 0, :])
        a = r.abs()
        change = (new_beta - beta).abs()
        new_beta_abs = new_beta.abs()
        if scale is None:
            # The first steps move the scale most: full selections. Later the
            # median moves little and is tracked (exact or flagged as not).
            if step_number < _SELECTIONS or step_number % _ANCHOR == _ANCHOR - 1:
                pair = middle_pair(a, present)
            else:
                # |Δrᵢ| = |xᵢᵀΔβ| ≤ Σⱼ max|xⱼ|·|Δβⱼ|, plus the rounding of the
                # two residuals y − Xβ (a bound too tight only makes the median
                # inexact: the ranks are verified by count).
                bound = (column_max * change).sum(-1)
                largest = torch.maximum(beta_abs, new_beta_abs)
                rounding = (4 * p + 16) * eps * (y_max + (column_max * largest).sum(-1))
                reach = bound * (1 + 64 * eps) + rounding + 16 * eps * pair.upper
                pair = tracked_middle_pair(a, reach, pair, present, ranks=ranks)
            exact = pair.exact
            # Without an exact median the scale holds for this step (β then
            # settles at it, and the window narrows) and the Aitken history
            # restarts (a step of 0).
            plain = torch.where(exact, estimate_scale(pair), s)
            new_s, rho, safe, run = _extrapolate(plain - s, rho, safe, run, plain)
            new_s = torch.where(done, s, new_s)
            scale_settled = ((new_s - s).abs() <= tol * s) & exact
        else:
            new_s = s
        size = beta_abs.amax(-1).clamp(min=1)
        small = (change.amax(-1) <= tol * size) & scale_settled
        beta, beta_abs, s = new_beta, new_beta_abs, new_s
        settled = settled + done
        done = done | small

    return beta, s, max_iter - settled, done
