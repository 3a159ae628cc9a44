"""Shared plumbing of the robust fits: a standardized design and a full-rank basis.

LAD and Huber regression are equivariant: if ``β̂`` fits ``(X, y)`` then
``A⁻¹β̂/c`` fits ``(XA, y/c)`` for any invertible ``A`` and ``c > 0`` (for Huber
with the scale divided by ``c`` as well). The fits therefore run on centred,
unit-scale columns and a response in units of its own spread, so that every
tolerance is relative and the conditioning does not depend on offsets or
units. :func:`unstandardize` maps the coefficients back.
"""

from __future__ import annotations

import math
from typing import Callable, NamedTuple, Optional, Tuple

import torch

from .._units import largest_abs, power_of_two_scale
from ..location import next_order_statistic
from ._design import in_blocks, noise_floor, prepare
from ._wls import fitted


class StandardForm(NamedTuple):
    """A batch of designs in standard form, plus what is needed to undo it.

    ``design`` is ``(..., m, p)`` with the intercept column (all ones) first when
    there is one; ``response`` is ``(..., m)``; ``weight`` is 1.0 for present
    points and 0.0 for masked ones, whose design rows and responses are zeroed.
    """

    design: torch.Tensor
    response: torch.Tensor
    weight: torch.Tensor
    x_centre: torch.Tensor  # (..., d)
    x_scale: torch.Tensor  # (..., d)
    y_centre: torch.Tensor  # (...)
    y_scale: torch.Tensor  # (...)
    informative: torch.Tensor  # (...) bool: no column is constant up to rounding


def standardize(
    fn: str,
    x: torch.Tensor,
    y: torch.Tensor,
    mask: Optional[torch.Tensor],
    intercept: bool,
) -> Tuple[StandardForm, bool]:
    """Validate ``x, y, mask`` and return the standardized problem and ``simple``.

    Inputs follow :func:`lossfn.fit.ols`: ``x`` is ``(..., m)`` or ``(..., m, d)``,
    ``y`` is ``(..., m)``, and their batch dims (and the mask's) broadcast.

    Columns are centred at their mean (only with an intercept, which absorbs the
    shift) and divided by their root mean square; ``y`` likewise centred, then
    divided by its mean absolute deviation from that centre. Zero spreads are
    replaced by 1 so that nothing divides by zero; such datasets are caught by
    the rank test of :func:`independent_rows`.
    """
    data = prepare(fn, x, y, mask)  # validated, batch dims broadcast
    simple, y = data.simple, data.y
    cols = data.x.unsqueeze(-1) if simple else data.x
    if data.present is None:
        weight = torch.ones_like(y)
    else:
        present = data.present
        weight = present.to(y.dtype)
        # Masked-out entries may hold nan or inf: replace them, never multiply them.
        cols = torch.where(present.unsqueeze(-1), cols, 0.0)
        y = torch.where(present, y, 0.0)
    count = weight.sum(-1).clamp(min=1)
    w_col = weight.unsqueeze(-1)

    # float32: every column and y in a power-of-two unit of its largest value
    # (exact), before any sum: data of 1e38 overflow their sums, of 1e±25 their
    # squares. Centres and scales are converted back at the end. float64 holds
    # squares from 1e-150 to 1e150, and its fits keep the two passes.
    scaled = cols.dtype == torch.float32
    if scaled:
        x_unit = power_of_two_scale(largest_abs(cols, -2)).unsqueeze(-2)
        y_unit = power_of_two_scale(largest_abs(y, -1)).unsqueeze(-1)
        cols, y = cols * x_unit, y * y_unit
    if intercept:
        x_centre = cols.sum(-2) / count.unsqueeze(-1)
        y_centre = y.sum(-1) / count
    else:
        x_centre = cols.new_zeros(cols.shape[:-2] + cols.shape[-1:])
        y_centre = y.new_zeros(y.shape[:-1])
    centred = (cols - x_centre.unsqueeze(-2)) * w_col
    x_scale = ((centred * centred).sum(-2) / count.unsqueeze(-1)).sqrt()
    # The rank rule of fit.ols: a centred column whose norm is within rounding
    # noise of its offset is constant, whatever its last bits say.
    spread = x_scale * count.unsqueeze(-1).sqrt()
    informative = (spread > noise_floor(x_centre, count.unsqueeze(-1))).all(-1)
    x_scale = torch.where(x_scale > 0, x_scale, 1.0)
    columns = centred / x_scale.unsqueeze(-2)

    shifted = (y - y_centre.unsqueeze(-1)) * weight
    y_scale = shifted.abs().sum(-1) / count
    y_scale = torch.where((y_scale > 0) & torch.isfinite(y_scale), y_scale, 1.0)
    response = shifted / y_scale.unsqueeze(-1)
    if scaled:
        x_unit, y_unit = x_unit.squeeze(-2), y_unit.squeeze(-1)
        x_centre, x_scale = x_centre / x_unit, x_scale / x_unit
        y_centre, y_scale = y_centre / y_unit, y_scale / y_unit

    design = torch.cat([w_col, columns], dim=-1) if intercept else columns
    form = StandardForm(design, response, weight, x_centre, x_scale, y_centre, y_scale, informative)
    return form, simple


def unstandardize(
    beta: torch.Tensor, std: StandardForm, intercept: bool, simple: bool
) -> Tuple[torch.Tensor, torch.Tensor]:
    """Map standardized coefficients ``(..., p)`` back to ``(intercept, slope)``.

    ``slope`` is ``(...)`` for simple regression and ``(..., d)`` otherwise; the
    intercept is 0 when the model has none.
    """
    c = std.y_scale.unsqueeze(-1)
    b = beta[..., 1:] if intercept else beta
    slope = b * c / std.x_scale
    if intercept:
        icpt = std.y_centre + beta[..., 0] * std.y_scale - (slope * std.x_centre).sum(-1)
    else:
        icpt = beta.new_zeros(beta.shape[:-1])
    return icpt, slope.squeeze(-1) if simple else slope


def representable(beta: torch.Tensor, icpt: torch.Tensor, slope: torch.Tensor, simple: bool) -> torch.Tensor:
    """``(...)`` bool: the unstandardized fit is inside the dtype's range.

    ``slope = b·y_scale/x_scale`` can overflow, or underflow to 0 or a subnormal
    (float32 x of 1e30 and y of 1e-20), where ``b`` is an ordinary number; the
    intercept then loses ``slope·x_centre``, which is representable. Subnormal
    slopes down to ``tiny/8`` keep 20 bits and pass.
    """
    s = slope.unsqueeze(-1) if simple else slope
    b = beta[..., beta.shape[-1] - s.shape[-1]:]
    lost = (s.abs() < torch.finfo(s.dtype).tiny / 8) & (b != 0)
    return torch.isfinite(icpt) & torch.isfinite(s).all(-1) & ~lost.any(-1)


def independent_rows(
    design: torch.Tensor, weight: torch.Tensor, priority: torch.Tensor
) -> Tuple[torch.Tensor, torch.Tensor]:
    """Pick ``p`` linearly independent present rows, preferring low ``priority``.

    Greedy Gram–Schmidt in ``p`` passes (``O(m·p²)`` per dataset): each pass
    takes the row of least priority whose part orthogonal to the rows picked so
    far keeps at least 1% of its squared norm (the most independent row if none
    does). The design counts as having full column rank iff every pick keeps
    more than ``1000·p·eps`` of its squared norm, i.e. no standardized column
    is a combination of the others to within about ``3e-6`` in float64.

    Returns:
        ``(rows, full_rank)``: indices ``(..., p)`` and a bool ``(...)``.
    """
    p = design.shape[-1]
    eps = torch.finfo(design.dtype).eps
    # Feature-major copy: products with it read the long axis m contiguously.
    design_t = design.mT.contiguous()
    norm2 = (design_t * design_t).sum(-2)
    usable = (weight > 0) & (norm2 > 0)
    unusable = (~usable).to(design.dtype)
    norm2 = norm2 + unusable  # rows of zeros: avoid 0/0
    projected = torch.zeros_like(norm2)  # squared norm of each row inside span(picked)
    basis = []  # orthonormal (..., p) vectors spanning the picked rows
    rows = []
    full_rank = torch.ones_like(usable[..., 0])
    # Arithmetic instead of torch.where on (..., m): several times faster on CPU.
    penalty = 4 * priority.abs().amax(-1, keepdim=True) + 4
    for _ in range(p):
        kept = (1 - projected / norm2) * (1 - unusable) - unusable
        bad = (kept <= 1e-2).to(design.dtype)
        by_priority = (priority + penalty * bad).argmin(-1, keepdim=True)
        pick = torch.where(bad.gather(-1, by_priority) > 0, kept.argmax(-1, keepdim=True), by_priority)
        full_rank = full_rank & (kept.gather(-1, pick).squeeze(-1) > 1000 * p * eps)
        rows.append(pick)
        unusable = unusable.scatter(-1, pick, 1.0)
        q = design.gather(-2, pick.unsqueeze(-1).expand(pick.shape + (p,))).squeeze(-2)
        for _ in range(2):  # one Gram–Schmidt sweep loses orthogonality; two suffice
            for b in basis:
                q = q - (q * b).sum(-1, keepdim=True) * b
        q = q / q.norm(dim=-1, keepdim=True).clamp(min=torch.finfo(design.dtype).tiny)
        basis.append(q)
        c = fitted(design_t, q)
        projected = projected + c * c
    return torch.cat(rows, dim=-1), full_rank


class MiddlePair(NamedTuple):
    """The two middle order statistics of ``n`` values (equal for odd ``n``), per dataset.

    Their average is the median (numpy's convention, :func:`lossfn.location.median`).
    ``exact`` is False where :func:`tracked_middle_pair` could only bracket them.
    """

    lower: torch.Tensor
    upper: torch.Tensor
    exact: torch.Tensor


def _middle_ranks(present: Optional[torch.Tensor], m: int, like: torch.Tensor):
    """0-based ranks of the middle pair of ``|r|`` when absent points are 0 (ranked first)."""
    if present is None:
        n = like.new_full(like.shape[:-1], m, dtype=torch.long)
    else:
        n = present.sum(-1)
    absent = m - n
    return (absent + (n - 1).clamp(min=0) // 2).clamp(max=m - 1), (absent + n // 2).clamp(max=m - 1)


def middle_pair(a: torch.Tensor, present: Optional[torch.Tensor]) -> MiddlePair:
    """Middle pair of ``a ≥ 0`` ``(..., m)`` over the ``present`` points, by selection.

    Absent entries must be 0. nan where no point is present or a present one is nan.
    """
    m = a.shape[-1]
    if present is None:
        filled, before = a, (m - 1) // 2
    else:
        # Absent entries go to the ends, `before` of them to −inf and the rest
        # to +inf, so that the lower middle of all m values, rank ⌊(m−1)/2⌋, is
        # that of the n present ones, rank before + ⌊(n−1)/2⌋: then one
        # selection serves every dataset, ~2x faster than a sort.
        n = present.sum(-1, keepdim=True)
        before = (m - 1) // 2 - (n - 1) // 2
        spread = torch.where((~present).cumsum(-1) <= before, -math.inf, math.inf)
        filled = torch.where(present, a, spread)
        before = before + (n - 1) // 2
    # torch.median selects the lower middle value (and propagates nan); the
    # upper one is a tie of it or the next value up: two cheap passes.
    lower = filled.median(dim=-1, keepdim=True).values
    if present is None and m % 2:
        upper = lower
    else:
        # The upper middle has rank before + 1 for an even count, `before` for an odd one.
        upper_rank = before + (1 if present is None else (n + 1) % 2)
        upper = next_order_statistic(filled, lower, upper_rank - 1)
    lower, upper = lower.squeeze(-1), upper.squeeze(-1)
    if present is not None:
        undefined = (present.sum(-1) == 0) | (torch.isnan(a) & present).any(-1)
        lower, upper = torch.where(undefined, math.nan, lower), torch.where(undefined, math.nan, upper)
    return MiddlePair(lower, upper, torch.ones_like(lower, dtype=torch.bool))


#: Entries of the window that :func:`tracked_middle_pair` ranks exactly: every
#: window of a dataset of up to 64 points, and on the benchmark's m = 200 every
#: window from the third step on. Sorting 64 slots that hold only the pair and
#: padding is cheap; 16 slots left datasets of 40 points unconverged.
WINDOW = 64


def middle_ranks(present: Optional[torch.Tensor], a: torch.Tensor) -> torch.Tensor:
    """0-based ranks ``(..., 2)`` of the middle pair of ``a`` ``(..., m)`` with absent entries 0.

    They depend on the mask only: an iteration computes them once and passes
    them to every :func:`tracked_middle_pair`.
    """
    return torch.stack(_middle_ranks(present, a.shape[-1], a), dim=-1)


def tracked_middle_pair(
    a: torch.Tensor,
    reach: torch.Tensor,
    pair: MiddlePair,
    present: Optional[torch.Tensor],
    *,
    ranks: Optional[torch.Tensor] = None,
) -> MiddlePair:
    """Middle pair of ``a ≥ 0`` ``(..., m)`` from ``pair``, that of an earlier ``a``.

    ``reach`` ``(...)`` bounds how far any entry moved since (the bound ``D`` of
    ``max|aᵢ − beforeᵢ|``): no order statistic moves further, so the new pair
    lies in ``[lower − D, upper + D]``. The first :data:`WINDOW` entries of that
    window (in index order) are ranked alone, and a ranked value ``v`` counts
    as the ``k``-th smallest of all ``a`` iff ``#(a < v) ≤ k < #(a ≤ v)``,
    verified exactly, whatever the rounding of ``D``: ``exact``. That holds
    whenever the window holds the pair's ranks and at most :data:`WINDOW`
    entries, and also in a window crowded by ties. Late in an iteration ``D`` is
    tiny and the window holds the pair only: ranking it costs a few passes
    over ``a``, ~2x less than a selection. Otherwise ``exact`` is False and
    ``lower``, ``upper`` are the window's ends: a bracket of the pair, from
    which the next window can go on. Absent entries must be 0. ``ranks``: those
    of :func:`middle_ranks`, if already at hand.
    """
    m = a.shape[-1]
    if ranks is None:
        ranks = middle_ranks(present, a)
    bounds = torch.stack([pair.lower - reach, pair.upper + reach], dim=-1)  # (..., 2)
    below = a < bounds[..., :1]
    inside = (a <= bounds[..., 1:]) ^ below  # below implies a <= high
    # Gather the window's entries into slots 1, 2, ... (in index order; slot 0
    # takes every entry outside it), then rank the first WINDOW slots alone.
    slot = inside.cumsum(-1) * inside
    size = min(WINDOW, m)
    window = a.new_full(a.shape[:-1] + (m + 1,), math.inf).scatter(-1, slot, a)
    ordered = window[..., 1 : size + 1].sort(dim=-1).values
    # Counts as int32: summing bools into int64 is the slower cast.
    n_below = below.sum(-1, keepdim=True, dtype=torch.int32)
    found = ordered.gather(-1, (ranks - n_below).clamp(0, size - 1))
    # v is the k-th smallest iff #(a < v) ≤ k < #(a ≤ v): the rank test, which
    # also accepts a window crowded by ties (duplicated points keep equal residuals).
    below_found = (a.unsqueeze(-2) < found.unsqueeze(-1)).sum(-1, dtype=torch.int32)
    through_found = (a.unsqueeze(-2) <= found.unsqueeze(-1)).sum(-1, dtype=torch.int32)
    exact = ((below_found <= ranks) & (through_found > ranks)).all(-1)
    # Not exact: the window itself, which brackets the pair (lower ≥ low,
    # upper ≤ high), so that the next window still holds it.
    lower, upper = torch.where(exact.unsqueeze(-1), found, bounds).unbind(-1)
    return MiddlePair(lower, upper, exact)


def blank_where(bad: torch.Tensor, *fields: torch.Tensor) -> Tuple[torch.Tensor, ...]:
    """``fields`` with nan where ``bad`` (batch shape ``(...)``; trailing dims broadcast)."""
    out = []
    for field in fields:
        flag = bad.reshape(bad.shape + (1,) * (field.dim() - bad.dim()))
        out.append(torch.where(flag, torch.nan, field))
    return tuple(out)


#: Datasets per block on the CPU. The torch route's iterative fits make dozens
#: of passes over their data; a block's working set stays in cache, a whole
#: batch's does not (blocks of 256 run ~2.3x faster per fit than one pass over
#: 1000 datasets of 200 points). The native kernels keep each dataset in cache
#: themselves, but the standardization before them and the record after them
#: are torch operations, 1.3-1.5x faster per block than on the whole batch.
#: On other devices the whole batch is one block.
CPU_BLOCK = 256


def fit_in_blocks(fit: Callable, result: type, fn: str, x, y, mask, per_dataset: dict, **options):
    """``fit(x, y, mask=mask, **per_dataset, **options)``, run block by block.

    The batch is flattened and cut into blocks of :data:`CPU_BLOCK` datasets
    (:func:`lossfn.fit._design.in_blocks`); each block is one batched call
    (datasets are independent, so the result is the same as one call), and the
    fields are joined into a ``result`` record of the batch shape.
    ``per_dataset`` holds parameters that may be tensors over the batch
    (``delta``, ``scale``). Under ``torch.func.vmap`` the function sees one
    dataset, one block.
    """
    data = prepare(fn, x, y, mask)
    if data.y.shape[-1] == 0:
        # No points (a rule on the shape): one absent point instead, so that every
        # dataset takes the path of an all-masked one (nan fields, ok=False).
        points = data.y.dim() - 1
        shape = list(data.x.shape)
        shape[points] = 1
        x = data.x.new_zeros(shape)
        y = data.y.new_zeros(data.y.shape[:-1] + (1,))
        mask = torch.zeros(y.shape, dtype=torch.bool, device=y.device)
        return fit_in_blocks(fit, result, fn, x, y, mask, per_dataset, **options)
    batch = data.y.shape[:-1]
    n = math.prod(batch)
    if data.y.device.type != "cpu" or n <= CPU_BLOCK:
        return fit(x, y, mask=mask, **per_dataset, **options)
    m = data.y.shape[-1]
    flat_x = data.x.reshape((n, m) + data.x.shape[len(batch) + 1 :])
    flat_y = data.y.reshape(n, m)
    flat_mask = None if data.present is None else data.present.reshape(n, m)
    names = [k for k, v in per_dataset.items() if isinstance(v, torch.Tensor)]
    fixed = {k: v for k, v in per_dataset.items() if not isinstance(v, torch.Tensor)}
    varying = [per_dataset[k].expand(batch).reshape(n) for k in names]

    def one_block(y_block, x_block, mask_block, *values):
        return tuple(fit(x_block, y_block, mask=mask_block, **fixed,
                         **dict(zip(names, values)), **options))

    fields = in_blocks(one_block, flat_y, flat_x, flat_mask, *varying, rows=CPU_BLOCK)
    return result(*[f.reshape(batch + f.shape[1:]) for f in fields])
