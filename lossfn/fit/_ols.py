r"""Ordinary least squares for a batch of datasets: the Gaussian-noise MLE of a line.

With ``y = α + xβ + ε``, ``ε ~ N(0, σ²)`` i.i.d., the log-likelihood is
``−n/2·log(2πσ²) − Σ(y − α − xβ)²/(2σ²)``; maximizing it over ``(α, β)``
minimizes the sum of squared residuals (SSR), whatever ``σ``, and maximizing
over ``σ²`` then gives ``σ̂² = SSR/n``. For one predictor the solution is the
closed form the source text derives:

.. math:: \hat\beta = \frac{\sum (x-\bar x)(y-\bar y)}{\sum (x-\bar x)^2},\qquad
          \hat\alpha = \bar y - \hat\beta\,\bar x .

Standard errors use the unbiased ``s² = SSR/(n − p)`` (``p`` parameters), as
statsmodels and NIST do: ``se(β̂) = s/√Sxx``, ``se(α̂) = s·√(1/n + x̄²/Sxx)``,
and in general ``s²·diag((XᵀX)⁻¹)``. ``r2`` is ``1 − SSR/Σ(y − ȳ)²`` with an
intercept and the uncentred ``1 − SSR/Σy²`` without one (as NIST NoInt1/2).
"""

from __future__ import annotations

from typing import NamedTuple, Optional

import torch

from .._checks import check_fit_options
from .._native import centred_gram, line_fit, ols_fit
from .._units import largest_abs, power_of_two_scale
from ._design import Data, in_blocks, moments, noise_floor, prepare, zero_absent
from ._solve import (ONE_PASS_ERROR, centred_grams, first_factor, padded_rows, points_last,
                     solve_grams)

__all__ = ["OLSFit", "ols"]


class OLSFit(NamedTuple):
    """One least-squares fit per dataset (``...`` is the batch shape).

    Attributes:
        intercept: (...,) ``α̂``; exactly 0 for ``intercept=False``.
        slope: (...,) for ``x`` of shape (..., m); (..., d) for (..., m, d).
        sigma2: (...,) noise variance MLE ``SSR/n``.
        stderr: (..., p) standard errors, intercept first when there is one
            (``p = 1 + d`` or ``d``); from ``SSR/(n − p)``, so nan when ``n = p``.
        r2: (...,) coefficient of determination (uncentred without intercept);
            nan when the denominator is 0 (constant ``y``).
        n: (...,) int64 number of points used.
        ok: (...,) bool; False for a degenerate dataset (fewer points than
            parameters, no points, constant or collinear predictors, nan/inf in
            a present point) or one whose coefficients lie outside the dtype's
            range (float32 x of 1e30 and y of 1e-20: a slope of 5e-51); its
            float fields are then nan. On the pure-torch route (see
            :mod:`lossfn.fit`), float32 with one predictor is also not ok
            where its unit (taken from its mean and first points) misses data
            far outside 1e±19 whose mean and first points are near 0; the
            native kernel sums in float64 and fits those.
    """

    intercept: torch.Tensor
    slope: torch.Tensor
    sigma2: torch.Tensor
    stderr: torch.Tensor
    r2: torch.Tensor
    n: torch.Tensor
    ok: torch.Tensor


def ols(
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    mask: Optional[torch.Tensor] = None,
    intercept: bool = True,
) -> OLSFit:
    r"""Fit ``y ≈ α + xβ`` by least squares, for every dataset of a batch at once.

    One predictor uses the centred closed form above (accurate with large
    offsets, even in float32), with ``SSR = Syy − β̂·Sxy``, which keeps about
    ``log10((1 − r²)/eps)`` significant digits of ``sigma2`` and ``stderr``
    (the coefficients keep all). Several predictors are centred,
    scaled to unit norm and solved by shifted CholeskyQR2 on batched Gram
    matrices (:mod:`lossfn.fit._solve`), which reaches QR accuracy on the NIST
    StRD problems (Filip included) and never truncates the rank silently.
    float32 works at any scale of the data, not only where its squares fit in
    float32 (about 1e-19 to 1e19): one predictor with an intercept is summed in
    float64 by the native kernel on the CPU (:mod:`lossfn.fit`, "Speed"), and
    elsewhere brought, with the response, to power-of-two units of their size
    (exact); several predictors get their Gram matrices in float64 on the CPU,
    and on accelerators in float32 with every column in a power-of-two unit.
    ``sigma2`` alone can then round to 0 or inf, where its own value lies
    outside float32's range.
    Degenerate datasets give nan fields and ``ok=False``; they never raise and
    never touch the other datasets. Runs under ``torch.func.vmap`` and
    autograd; dtype and device follow the inputs.

    Args:
        x: (..., m) one predictor, or (..., m, d) ``d`` predictors.
        y: (..., m) responses, same dtype (float32 or float64). Batch dims of
            ``x``, ``y`` and ``mask`` broadcast.
        mask: optional bool (..., m), True where a point exists. Absent points
            are never read (nan or 1e30 there change nothing), so datasets of
            different lengths can share one padded batch.
        intercept: fit ``α`` (default) or force the line through the origin.

    Returns:
        :class:`OLSFit`.

    Example:
        >>> import torch
        >>> from lossfn import fit
        >>> x = torch.tensor([[0.0, 1.0, 2.0, 3.0], [0.0, 1.0, 2.0, 9.0]])
        >>> y = torch.tensor([[1.0, 3.0, 5.0, 7.0], [2.0, 1.0, 0.0, 99.0]])
        >>> mask = torch.tensor([[True, True, True, True], [True, True, True, False]])
        >>> res = fit.ols(x, y, mask=mask)
        >>> res.slope, res.intercept, res.n
        (tensor([ 2., -1.]), tensor([1., 2.]), tensor([4, 3]))

    References:
        NIST Statistical Reference Datasets, linear regression
        (https://www.itl.nist.gov/div898/strd/lls/lls.shtml).
    """
    check_fit_options("ols", intercept)
    data = prepare("ols", x, y, mask)
    if data.simple:
        return _simple(data) if intercept else _simple_origin(data)
    return _multiple(data, intercept)


def _finish(
    n: torch.Tensor,
    simple: bool,
    alpha: torch.Tensor,
    beta: torch.Tensor,
    sigma2: torch.Tensor,
    stderr: torch.Tensor,
    unexplained: torch.Tensor,
    p: int,
    full_rank: torch.Tensor,
    residual_norm: torch.Tensor,
) -> OLSFit:
    """Assemble the record; nan out every float field of a failed dataset.

    ``sigma2`` is σ̂² = SSR/n, ``unexplained`` SSR over the total sum of
    squares, ``residual_norm`` √SSR; the last two are representable wherever
    the data are. σ̂² rounds to 0 or overflows only where its own value lies
    outside the dtype's range (float32 data of scale below ~1e-19 or above
    ~1e19), and the fit stays ok.
    """
    # nan/inf anywhere in a present point reaches these: one check suffices.
    slopes = beta if simple else beta.sum(-1)
    ok = full_rank & (n >= p) & torch.isfinite(alpha + slopes + residual_norm)
    # 0 for a good dataset, nan for a failed one: adding it leaves good values
    # bit-exact and turns every field of a failed one into nan.
    poison = torch.where(ok, 0.0, torch.nan).to(alpha.dtype)
    per_coef = poison if simple else poison.unsqueeze(-1)
    return OLSFit(
        alpha + poison, beta + per_coef, sigma2 + poison, stderr + poison.unsqueeze(-1),
        1 - unexplained + poison, n.to(torch.int64), ok,
    )


def _unbiased(ssr: torch.Tensor, n: torch.Tensor, p: int) -> torch.Tensor:
    """``s² = SSR/(n − p)``; nan (not ±inf) when no degrees of freedom are left."""
    return torch.where(n > p, ssr / (n - p), torch.nan)


def _residual_sd(residual_norm: torch.Tensor, n: torch.Tensor, p: int) -> torch.Tensor:
    """``s = √(SSR/(n − p))`` from ``√SSR``, without squaring it (no over/underflow)."""
    return residual_norm / torch.where(n > p, n - p, torch.nan).sqrt()


def _simple(data: Data) -> OLSFit:
    native = line_fit(data.x, data.y, data.present)
    if native is not None:  # the sums and the arithmetic below, in C (lossfn._native)
        return OLSFit(*native)
    mo = moments(data)
    n = data.n
    beta = mo.slope
    alpha = mo.mean_y - beta * mo.mean_x
    s = _residual_sd(mo.residual_norm, n, 2)
    relative_x = mo.mean_x / mo.norm_x
    stderr = torch.stack([s * (1 / n + relative_x * relative_x).sqrt(), s / mo.norm_x], dim=-1)
    # A norm that overflowed (float32 data spanning > ~1e15, see _design._centred)
    # would leave a slope of 0: not ok.
    varies = (mo.norm_x > noise_floor(mo.mean_x, n)) & torch.isfinite(mo.norm_x)
    # A slope below the dtype's normal range (x of 1e30, y of 1e-20 in float32) rounds to 0 or
    # a few bits, and α = ȳ − β·x̄ loses β·x̄, which is representable: not ok.
    varies = varies & ~((beta.abs() < torch.finfo(beta.dtype).tiny / 8) & (mo.corr.abs() > 0))  # nan for constant y: slope exactly 0
    return _finish(data.n, True, alpha, beta, mo.sigma2, stderr, mo.unexplained, 2, varies,
                   mo.residual_norm)


def _simple_origin(data: Data) -> OLSFit:
    # In units of powers of two (exact): sums of squares cannot over/underflow.
    x = zero_absent(data.x, data.present)
    y = zero_absent(data.y, data.present)
    # float32 in power-of-two units (exact), so that the sums of squares cannot
    # over- or underflow (see _design._centred); a rare path: a full pass each.
    scale_x = scale_y = None
    if x.dtype == torch.float32:
        scale_x, scale_y = (power_of_two_scale(largest_abs(v, -1)) for v in (x, y))
        x, y = x * scale_x.unsqueeze(-1), y * scale_y.unsqueeze(-1)
    sxx = torch.linalg.vecdot(x, x)
    sxy = torch.linalg.vecdot(x, y)
    beta = sxy / sxx
    e = torch.addcmul(y, x, beta.unsqueeze(-1), value=-1)
    ssr = torch.linalg.vecdot(e, e)
    stderr = (_unbiased(ssr, data.n, 1) / sxx).sqrt()
    if scale_x is not None:  # β = β'·s_x/s_y for the scaled data's β'
        ratio = scale_x.double() / scale_y.double()
        beta, stderr = (beta.double() * ratio).to(beta.dtype), (stderr.double() * ratio).to(beta.dtype)
    unexplained = ssr / torch.linalg.vecdot(y, y)
    # σ̂² divided by n before the unit comes off: SSR itself may overflow where SSR/n does not.
    sigma2, ssr_root = ssr / data.n, ssr.sqrt()
    if scale_y is not None:
        sigma2, ssr_root = sigma2 / scale_y / scale_y, ssr_root / scale_y
    lost = (beta.abs() < torch.finfo(beta.dtype).tiny / 8) & (sxy != 0)  # sxy: no second pass
    return _finish(data.n, True, torch.zeros_like(beta), beta, sigma2, stderr.unsqueeze(-1),
                   unexplained, 1, (sxx > 0) & torch.isfinite(sxx) & ~lost, ssr_root)


def _precision(x: torch.Tensor):
    """``(working dtype, data_eps)``. float32 on the CPU: one Gram pass in float64
    (measured 1.3-1.5x faster than the two float32 passes of CholeskyQR2, and at
    least as accurate). On accelerators float64 can be far slower: kept there."""
    if x.dtype == torch.float32 and x.device.type == "cpu":
        return torch.float64, torch.finfo(x.dtype).eps
    return x.dtype, None


def _multiple_block(y, x, present, n, intercept: bool):
    """Centre one block of datasets and pass over its data: (means, *Gram matrices)."""
    d = x.shape[-1]
    work, data_eps = _precision(x)
    # [X y 0]ᵀ (..., kp, m) or [X y 0] (..., m, kp), whichever the solver's
    # products run fastest on (lossfn.fit._solve), in the working dtype and in
    # one copy (cat promotes); zeros pad it to the size they like best.
    pad = padded_rows(d + 1, x.device) - (d + 1)
    points = -1 if points_last(d + 1, x.device) else -2  # the dim over the points
    columns = -3 - points  # the other one of the last two dims
    parts = [x.mT, y.unsqueeze(-2)] if points == -1 else [x, y.unsqueeze(-1)]
    parts[1] = parts[1].to(work)
    if pad:
        shape = list(parts[1].shape)
        shape[columns] = pad
        parts.append(y.new_zeros(shape, dtype=work))
    aug = torch.cat(parts, dim=columns)  # ours: changed in place below
    n = n.to(work)
    rows = None if present is None else present.unsqueeze(columns)
    if rows is not None:
        aug.masked_fill_(~rows, 0.0)  # nan or inf at absent points is never read
    unit = None
    if work != torch.float64:
        # float32 (accelerators): each column in a power-of-two unit of its
        # largest value (exact; before the mean, whose sum could overflow),
        # since float32 Gram entries over- or underflow for data beyond about
        # 1e±19 (y of 1e-30 once gave standard errors of 0 with ok=True).
        unit = power_of_two_scale(largest_abs(aug, points))  # (..., kp); 1 for the zero pads
        aug.mul_(unit.unsqueeze(points))
    offset = None
    if intercept:
        mean = aug.sum(points) / n.unsqueeze(-1)
        aug.sub_(mean.unsqueeze(points))
        if rows is not None:  # absent points back to 0 (addcmul_ has no vmap rule)
            aug.masked_fill_(~rows, 0.0)
        # The first-pass mean is off by about eps·|mean|, not small next to the
        # spread with large offsets: the mean that is left is removed exactly in
        # the solver's small algebra. Its effect on the Gram matrix is of second
        # order, (eps·mean/spread)², but that is 1e-10 at an offset of 5e10
        # spreads, in float64 too.
        offset = aug.sum(points) / n.unsqueeze(-1)
        mean = mean + offset
    else:
        shape = list(aug.shape)
        del shape[points]  # a rule on the shape: select(points, 0) raises at m = 0
        mean = aug.new_zeros(shape)
    grams = centred_grams(aug, offset, n, mean[..., :d], data_eps=data_eps)
    if unit is None:
        return (mean[..., : d + 1],) + grams
    return ((mean / unit)[..., : d + 1],) + grams + (unit[..., : d + 1],)


def _native_fit(data: Data, intercept: bool, data_eps: Optional[float]) -> Optional[OLSFit]:
    """The whole fit from the native kernels (:mod:`lossfn._native`), or None
    where they cannot serve the call.

    ``ols_fit`` forms each Gram matrix in float64 in one pass per dataset
    while the dataset is in cache, then solves it and makes the record, eight
    datasets at a time while their Gram matrices are in cache. That pass is
    all for float32 data, as on the torch route, and for the float64 datasets
    where one pass keeps about 12 digits (:data:`lossfn.fit._solve.ONE_PASS_ERROR`:
    well-conditioned designs, responses neither nearly an exact fit nor
    nearly unrelated, data not so small that their squares are subnormal);
    the others, the NIST designs among them, get CholeskyQR2's second pass
    over their own data, and their records from :func:`_record`. Which
    datasets those are is a decision on values, made here only: the kernels
    serve eager calls, never ``torch.func`` transforms, which take the torch
    route and its two passes for every dataset.
    """
    d, m = data.x.shape[-1], data.y.shape[-1]
    float64 = data_eps is None
    done = ols_fit(data.x, data.y, data.present, intercept=intercept,
                   one_pass_error=ONE_PASS_ERROR if float64 else None)
    if done is None:
        return None
    record, n, again, means, gram = done
    fit = OLSFit(*record[:5], n, record[5])
    if again is None or not again.any():
        return fit
    # One dataset (batch shape ()): a batch of one, as views, so that indexing works alike.
    lift = (lambda v: v.unsqueeze(0)) if again.dim() == 0 else (lambda v: v)
    at = lift(again).nonzero(as_tuple=True)  # those datasets' data only: a copy of a few
    x, y, present = (None if v is None else lift(v)[at] for v in (data.x, data.y, data.present))
    gram, means, n = lift(gram)[at], lift(means)[at], lift(n)[at].to(torch.float64)
    r0, info0, transform = first_factor(gram, means[..., :d], n, m, torch.finfo(gram.dtype).eps)
    second = centred_gram(x, y, present, means=means, transform=transform)
    if second is None:
        return None
    solution = solve_grams((gram, r0, second[1], info0), n, means[..., :d])
    for field, better in zip(fit, _record(n, data.y.dtype, means, solution, intercept)):
        lift(field)[at] = better
    return fit


def _multiple(data: Data, intercept: bool) -> OLSFit:
    d = data.x.shape[-1]
    work, data_eps = _precision(data.x)
    if work == torch.float64:
        native = _native_fit(data, intercept, data_eps)
        if native is not None:
            return native
    n = data.n
    # Blocks of datasets keep the centred copy in cache for the passes that
    # follow, and spare the page faults of allocating it whole; the small
    # algebra after them runs once, on the whole batch.
    means, *grams = in_blocks(
        lambda y, x, present, n: _multiple_block(y, x, present, n, intercept),
        data.y, data.x, data.present, n,
    )
    # The float32 route's Gram matrices are in power-of-two units of the
    # columns (see _multiple_block): X' = X·D, y' = y·u, D = diag(ux). Then
    # β = D·β'/u, (XᵀX)⁻¹'s factor is D·C', SSR = SSR'/u²; everything in
    # _record stays in the scaled units up to the last ratio, which cannot underflow.
    ux = uy = None
    if work != torch.float64:
        *grams, unit = grams
        ux, uy = unit[..., :d], unit[..., d]
    # float64 for float32 data on the CPU: cast at the end
    sol = solve_grams(tuple(grams), n, means[..., :d] if ux is None else means[..., :d] * ux,
                      data_eps=data_eps)
    return _record(n, data.y.dtype, means, sol, intercept, ux, uy)


def _record(n: torch.Tensor, dtype: torch.dtype, means: torch.Tensor, sol, intercept: bool,
            ux: Optional[torch.Tensor] = None, uy: Optional[torch.Tensor] = None) -> OLSFit:
    """The :class:`OLSFit` of ``n`` points each from :func:`solve_grams`' solution,
    in ``dtype``; ``means`` (..., d + 1) those the centring removed, ``ux`` and
    ``uy`` the power-of-two units of the float32 route's columns, or None."""
    d = sol.coef.shape[-1]
    n = n.to(sol.ssr.dtype)
    p = d + int(intercept)
    s2 = _unbiased(sol.ssr, n, p).unsqueeze(-1)
    # s·‖row of C‖ with the row in units of its largest entry: C = S·R⁻¹ is as
    # large as 1/‖x_j‖, and its squares overflow for columns of 1e-155 where the
    # standard errors themselves are ordinary numbers (they came out inf, ok=True).
    top = sol.cov_factor.abs().amax(-1).clamp(min=torch.finfo(s2.dtype).tiny)
    se_slope = s2.sqrt() * top * (sol.cov_factor / top.unsqueeze(-1)).square().sum(-1).sqrt()
    coef, residual_norm = sol.coef, sol.ssr.sqrt()
    # σ̂² divided by n before the unit comes off: SSR itself may overflow where SSR/n does not.
    sigma2, unexplained = sol.ssr / n, sol.ssr / sol.total
    scaled_coef = coef
    if ux is not None:
        # The units' ratio can leave float32's range where the result does not.
        ratio = (ux.double() / uy.double().unsqueeze(-1))
        coef = (coef.double() * ratio).to(coef.dtype)
        se_slope = (se_slope.double() * ratio).to(coef.dtype)
        residual_norm, sigma2 = residual_norm / uy, sigma2 / uy / uy
    if intercept:
        mean_x, mean_y = means[..., :d], means[..., d]
        alpha = mean_y - torch.linalg.vecdot(mean_x, coef)
        lever = ((mean_x if ux is None else mean_x * ux).unsqueeze(-2) @ sol.cov_factor).squeeze(-2)
        se_alpha = (s2 * (1 / n.unsqueeze(-1) + lever.square().sum(-1, keepdim=True))).sqrt()
        if uy is not None:
            se_alpha = se_alpha / uy.unsqueeze(-1)
        stderr = torch.cat([se_alpha, se_slope], dim=-1)
    else:
        alpha = torch.zeros_like(sol.ssr)
        stderr = se_slope
    alpha, coef, sigma2, stderr, unexplained, residual_norm = (
        v.to(dtype) for v in (alpha, coef, sigma2, stderr, unexplained, residual_norm)
    )
    # A coefficient below the dtype's normal range rounds to 0 or a few bits (and the
    # intercept of the float32 routes loses its share): not ok.
    lost = ((coef.abs() < torch.finfo(coef.dtype).tiny / 8) & (scaled_coef != 0)).any(-1)
    return _finish(n, False, alpha, coef, sigma2, stderr, unexplained, p, sol.full_rank & ~lost,
                   residual_norm)
