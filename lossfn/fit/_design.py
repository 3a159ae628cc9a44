"""Turn ``x``, ``y`` and a mask into centred data: the shared first step of every fit.

Two things make closed-form fits inaccurate, and both are handled here:

* Offsets. ``Σx² − n·x̄²`` loses every digit that the offset ``x̄`` shares with
  the data (``x ≈ 1e4 + U(0, 1)`` in float32 has none left). The data are
  centred on a first-pass mean ``c`` instead, and the moments are the
  shifted sums ``Σ(x − c)² − (Σ(x − c))²/n``: the correction is tiny, so
  nothing cancels, and the result is the exact-mean value to working
  precision. (The several-predictor solver of :mod:`lossfn.fit._solve` has
  its own centring.) On the CPU the native kernel of :mod:`lossfn._native`
  computes the same sums for one predictor.
* Absent points. Masked-out entries are replaced by zeros with ``torch.where``
  before any arithmetic, so nan or 1e30 there cannot leak into a sum
  (multiplying by a 0/1 weight would not do: ``0 · nan`` is nan).

Large batches are processed in blocks of datasets (:func:`in_blocks`), so that
the centred copies are still in cache when the next pass reads them.
Everything is free of Python branches on tensor values (``torch.func.vmap``-safe).
"""

from __future__ import annotations

from typing import NamedTuple, Optional

import torch

from .._checks import check_regression_data
from .._native import line_sums
from .._units import power_of_two_scale

__all__ = ["Data", "prepare", "zero_absent", "noise_floor", "moments", "Moments", "in_blocks",
           "packed_symmetric_index"]


class Data:
    """Validated inputs of a fit; ``present`` is None when every point exists."""

    __slots__ = ("x", "y", "present", "simple", "_n")

    def __init__(self, x: torch.Tensor, y: torch.Tensor, present: Optional[torch.Tensor],
                 simple: bool):
        self.x = x  # (..., m) or (..., m, d)
        self.y = y  # (..., m)
        self.present = present  # (..., m) bool, broadcast to y's shape
        self.simple = simple  # x is (..., m): one predictor
        self._n: Optional[torch.Tensor] = None

    @property
    def n(self) -> torch.Tensor:
        """(...,) number of present points, in x's dtype. Made on first use: the
        native kernels count for themselves, and a tensor op costs tens of µs
        when the caches are cold (as between the calls of a Python loop)."""
        if self._n is None:
            y, m = self.y, self.y.shape[-1]
            self._n = (y.new_full(y.shape[:-1], float(m)) if self.present is None
                       else self.present.sum(-1).to(y.dtype))
        return self._n


def prepare(fn: str, x: object, y: object, mask: Optional[torch.Tensor]) -> Data:
    """Validate (:func:`lossfn._checks.check_regression_data`) and broadcast the inputs."""
    simple, batch = check_regression_data(fn, x, y, mask)
    shape = batch + y.shape[-1:]
    x_shape = shape if simple else shape + x.shape[-1:]

    def broadcast(v: torch.Tensor, to: torch.Size) -> torch.Tensor:
        return v if v.shape == to else v.expand(to)  # no view op where none is needed

    present = None if mask is None else broadcast(mask, shape)
    return Data(broadcast(x, x_shape), broadcast(y, shape), present, simple)


def zero_absent(v: torch.Tensor, present: Optional[torch.Tensor]) -> torch.Tensor:
    """``v`` with absent points set to 0 (``present`` aligned with ``v``'s dims)."""
    return v if present is None else torch.where(present, v, 0.0)


def noise_floor(centre: torch.Tensor, n: torch.Tensor, eps: Optional[float] = None) -> torch.Tensor:
    """Norm below which a centred column is rounding noise, not data.

    Centring ``x ≈ c`` leaves errors of about ``eps·|c|`` per point, so a column
    of norm below ``8·eps·|c|·√n`` carries no information (a constant column
    centres to exactly 0 or to such noise). ``eps`` is the data's precision
    (default: that of ``centre``'s dtype).
    """
    eps = torch.finfo(centre.dtype).eps if eps is None else eps
    return 8 * eps * centre.abs() * n.sqrt()


def packed_symmetric_index(k: int) -> list:
    """Where entry ``(i, j)`` of a symmetric ``k × k`` matrix sits in its packed upper triangle.

    The packed layout holds row ``i``'s entries ``j ≥ i`` one row after the
    other (``(0,0), (0,1), …, (0,k−1), (1,1), …``). Returns the ``k²`` positions
    in row-major order, so that ``packed[..., index].unflatten(-1, (k, k))`` is
    the full, exactly symmetric matrix.
    """
    first = [i * k - i * (i - 1) // 2 for i in range(k)]  # row i's first entry
    return [first[min(i, j)] + abs(i - j) for i in range(k) for j in range(k)]


class Moments(NamedTuple):
    """Centred moments of (x, y) and the residuals of the line, per dataset.

    Norms rather than sums of squares: ``‖x − x̄‖`` is representable wherever the
    data are, while ``Σ(x − x̄)²`` overflows float32 from a spread of about 1e19
    and underflows below about 1e-19.
    """

    mean_x: torch.Tensor
    mean_y: torch.Tensor
    norm_x: torch.Tensor  # ‖x − x̄‖ = √Sxx
    norm_y: torch.Tensor  # ‖y − ȳ‖ = √Syy
    corr: torch.Tensor  # ρ̂ = Sxy/√(Sxx·Syy)
    slope: torch.Tensor  # β̂ = Sxy/Sxx
    residual_norm: torch.Tensor  # ‖y − ȳ − β̂(x − x̄)‖ = √SSR, SSR = Syy − β̂·Sxy
    sigma2: torch.Tensor  # SSR/n: 0 or inf where it lies outside the dtype's range
    unexplained: torch.Tensor  # SSR/Syy = 1 − r²


# Datasets are processed in blocks of about this many bytes of input, so that
# the centred copies and products of a block are still in cache when the next
# pass reads them: the passes after the first then cost cache, not memory,
# bandwidth, and no whole-batch temporary is allocated (those page-fault).
# Measured on one CPU core: 1-4 MB beats smaller blocks (per-op overhead) and
# larger ones; 1.3-1.8x faster than one block for 8 MB float64 batches, and
# 1.6x for the multiple regression at d = 20 (benchmarks/fits.py).
BLOCK_BYTES = 1 << 22


def in_blocks(fn, *arrays: Optional[torch.Tensor], rows: Optional[int] = None) -> tuple:
    """``fn(*arrays)`` evaluated on consecutive blocks of datasets, concatenated.

    ``arrays[0]`` is laid out (..., m) (the response); every array starts with
    the same batch dims ``...``. Several batch dims are flattened into one
    where that is a view of every array (a broadcast input may not allow it;
    the first batch dim is split then), and split into blocks of ``rows``
    datasets (default: about :data:`BLOCK_BYTES` of input), so a batch of shape
    (1, 100000) is split as finely as one of shape (100000,). ``fn`` must treat
    the datasets along the first dim independently and return a tuple of
    tensors whose first dim is the block's; the results get the batch dims
    back. Arrays that are None are passed as None. Splitting is by shape only
    (never by value), so this is transparent to autograd and ``torch.func``;
    data without a batch dim (for example inside ``vmap`` of a one-dataset
    call) run in one block, as does data off the CPU.
    """
    lead = arrays[0]
    # The cache argument is a CPU one; on an accelerator, blocks would only
    # multiply kernel launches.
    if lead.dim() < 2 or lead.device.type != "cpu":
        return fn(*arrays)
    batch = lead.shape[:-1]
    flat = _flat_views(arrays, len(batch)) if len(batch) > 1 else None
    if flat is not None:
        parts = in_blocks(fn, *flat, rows=rows)
        return tuple(p.unflatten(0, batch) for p in parts)
    if rows is None:
        row_bytes = sum(a.shape[1:].numel() * a.element_size() for a in arrays if a is not None)
        rows = max(1, BLOCK_BYTES // max(row_bytes, 1))
    if lead.shape[0] <= rows:
        return fn(*arrays)
    parts = []
    for start in range(0, lead.shape[0], rows):
        size = min(rows, lead.shape[0] - start)
        parts.append(fn(*(None if a is None else a.narrow(0, start, size) for a in arrays)))
    return tuple(torch.cat(p) for p in zip(*parts))


def _flat_views(arrays: tuple, dims: int) -> Optional[tuple]:
    """The arrays with their first ``dims`` dims merged, if every one is a view; else None.

    Never a copy: merging the batch dims of a broadcast array (stride 0 in
    one of them) can need one as large as the whole batch.
    """
    flat = []
    for a in arrays:
        if a is None:
            flat.append(None)
            continue
        try:
            flat.append(a.view((-1,) + a.shape[dims:]))
        except RuntimeError:
            return None
    return tuple(flat)


#: Leading points per dataset whose size :func:`_centred` takes into a float32 unit.
SCALE_SAMPLES = 4


def _centred(v: torch.Tensor, present: Optional[torch.Tensor], n: torch.Tensor):
    """``(c, v − c, size)``: the first-pass mean ``c``, the centred data (0 at
    absent points) and, for float32, a size for their unit (None for float64).

    float32 squares overflow from about 1e19 and underflow below about 1e-19,
    well inside the range of the data: data of physical size in SI units
    (masses of 1e-27 kg) would lose Σ(y − ȳ)² to underflow, and σ̂ and the
    standard errors with it. :func:`_line_sums` therefore brings float32 data to
    a power-of-two unit of ``size`` (:func:`power_of_two_scale`): the larger of
    ``|c|`` and ``Σ|v|`` over the first :data:`SCALE_SAMPLES` points, absent
    ones as 0 (a full pass for the largest value was measured to cost
    unmasked fits 40–70%, masked ones 20–30%). A dataset whose mean and first
    points are all far smaller than its other values can still over- or
    underflow: :func:`moments` then reports it (non-finite, inconsistent or
    subnormal sums: the fit is not ok). float64 squares hold any spread from
    1e-150 to 1e150 and are not scaled.
    """
    if present is None:
        centre = v.sum(-1) / n
        centred = v - centre.unsqueeze(-1)
    else:
        v = torch.where(present, v, 0.0)  # nan or inf there is never read
        centre = v.sum(-1) / n
        # v − c·w keeps absent points at 0 in one fused op.
        centred = torch.addcmul(v, present.to(v.dtype), centre.unsqueeze(-1), value=-1)
    if v.dtype != torch.float32:
        return centre, centred, None
    # The first points are in cache now, after the sum; absent ones count as 0.
    return centre, centred, torch.maximum(v[..., :SCALE_SAMPLES].abs().sum(-1), centre.abs())


def _line_sums(y, x, present, n):
    """Per-dataset sums of one block; everything after them is O(datasets) algebra."""
    cx, dx, size_x = _centred(x, present, n)
    cy, dy, _ = _centred(y, present, n)
    constant, high, low = _extremes(y, present)
    if size_x is not None:
        # The response's unit from its largest value (from the extremes, no
        # pass of its own): a unit that misses it can leave every square and
        # every product dx·dy 0 (mean 0, first points 0 or absent, |y| <
        # 2^-75), which reads as a constant y (slope 0, ok). A row without
        # points has infinite extremes, and power_of_two_scale gives it 1.
        size_y = torch.maximum(high.abs(), low.abs())
        # Both units in one go; multiplying by a power of two is exact, so the
        # centred values round as unscaled ones would.
        units = power_of_two_scale(torch.stack([size_x, size_y]))
        dx.mul_(units[0].unsqueeze(-1))
        dy.mul_(units[1].unsqueeze(-1))
    # vecdot, not vector_norm(...)², for Σdx²: the slope feeds α = ȳ − β·x̄,
    # which magnifies its last-ulp errors (Norris loses a digit with the norm).
    # The first-pass mean is off by about eps·|x̄|, which is not small next to
    # the spread when the offset is large (x ≈ 1e4 + U(0, 1) in float32; a
    # float64 y that varies by an ulp once gave σ̂² n times too large): the
    # sums Σ(x − c) measure that error so that it can be removed.
    sums = (cx, cy, torch.linalg.vecdot(dx, dx), torch.linalg.vecdot(dx, dy),
            torch.linalg.vector_norm(dy, dim=-1), constant, high, dx.sum(-1), dy.sum(-1))
    return sums if size_x is None else sums + (units[0], units[1])


def _extremes(v: torch.Tensor, present: Optional[torch.Tensor]):
    """``(constant, high, low)`` per row: the largest and smallest present values
    (−inf and inf without any), and True where they are equal: all the present
    values are one value, ``high``. nan never is.

    A constant response centred on its first-pass mean leaves that mean's
    rounding in every point: Σdy² and Σdx·dy come out at rounding level
    instead of 0 (slope 1e-17 and r2 = 1 once, or a false "unit missed").
    """
    if v.shape[-1] == 0:  # a rule on the shape: amax has no identity on empty rows
        empty = v.sum(-1)
        return torch.zeros(v.shape[:-1], dtype=torch.bool, device=v.device), empty - torch.inf, empty + torch.inf
    high = (v if present is None else torch.where(present, v, -torch.inf)).amax(-1)
    low = (v if present is None else torch.where(present, v, torch.inf)).amin(-1)
    return high == low, high, low


def _in_units(v: torch.Tensor, unit: Optional[torch.Tensor]) -> torch.Tensor:
    """A quantity of scaled data back in the data's units (divided by the unit)."""
    return v if unit is None else v / unit


def moments(data: Data) -> Moments:
    """Centred moments of one predictor and the response, and the line's residual norm.

    On the CPU, outside ``torch.func`` transforms and autograd, the sums come
    from a native kernel (:mod:`lossfn._native`) that makes both passes over
    each block of a dataset while it is in cache and accumulates in float64 (float32 data included,
    which then need no units). Elsewhere, shifted sums: with ``c`` the
    first-pass mean and ``dx = x − c``, ``x̄ = c + Σdx/n``, ``Sxx = Σdx² −
    (Σdx)²/n``, ``Sxy = Σdx·dy − Σdx·Σdy/n``, and ``SSR = Syy − β̂·Sxy``; for
    float32 in the power-of-two units of :func:`_line_sums`, converted back
    only as norms and ratios. Each block of datasets is centred and reduced
    while it is in cache, so only the first pass reads memory.
    """
    n = data.n
    native = line_sums(data.x, data.y, data.present)
    if native is not None:
        return _native_moments(*native, n)
    cx, cy, sxx, sxy, norm_dy, constant, value, sum_dx, sum_dy, *units = in_blocks(
        _line_sums, data.y, data.x, data.present, n)
    scale_x, scale_y = units if units else (None, None)  # float32's power-of-two units
    sxx = sxx - sum_dx * sum_dx / n
    sxy = sxy - sum_dx * sum_dy / n
    syy = norm_dy.square() - sum_dy * sum_dy / n
    cx, cy = cx + _in_units(sum_dx / n, scale_x), cy + _in_units(sum_dy / n, scale_y)
    # A constant response: its mean exactly, Syy = Sxy = 0 (slope 0, r2 nan),
    # as the native kernel gives it.
    zero = torch.zeros_like(syy)
    cy = torch.where(constant, value, cy)
    syy, sxy = torch.where(constant, zero, syy), torch.where(constant, zero, sxy)
    if scale_x is not None:
        # Σdy² that underflowed to 0 next to a nonzero Σdx·dy (impossible by
        # Cauchy–Schwarz) is a unit that missed the data's size: nan, not ok.
        syy = torch.where((syy == 0) & (sxy != 0), torch.nan, syy)
        # A unit that missed the data's size can also leave the squares subnormal,
        # not 0, and they lose digits silently: each rounds by up to 2^-150, so a
        # nonzero sum below n·2^-126 is not known to eps. Any spread that a
        # right unit resolves gives far more (about 2^-48, a heuristic bound): nan, not ok.
        floor = n * 2.0**-126
        sxx = torch.where((sxx > 0) & (sxx < floor), torch.nan, sxx)
        syy = torch.where((syy > 0) & (syy < floor), torch.nan, syy)
    slope = sxy / sxx
    # Syy − β·Sxy cancels as r² → 1: SSR keeps about log10((1 − r²)/eps)
    # digits (9 in float64 at r² = 1 − 1e-7; Norris keeps 11.7). A pass over
    # the residuals would keep them all, at a quarter more time.
    ssr = (syy - slope * sxy).clamp(min=0)
    if scale_x is not None:
        # The ratio of the units can leave float32's range (x of 1e-30, y of
        # 1e9) where the slope does not: in float64 (O(datasets) work).
        slope = (slope.double() * (scale_x.double() / scale_y.double())).to(slope.dtype)
    return Moments(cx, cy, _in_units(sxx.sqrt(), scale_x), _in_units(syy.sqrt(), scale_y),
                   # √Sxx·√Syy, not √(Sxx·Syy): the product of two finite sums can
                   # overflow (ρ read 0) or go subnormal (ρ off by 1e-3) where a unit missed.
                   sxy / (sxx.sqrt() * syy.sqrt()), slope, _in_units(ssr.sqrt(), scale_y),
                   _in_units(_in_units(ssr / n, scale_y), scale_y), ssr / syy)


def _native_moments(mean_x, mean_y, sxx, sxy, syy, n) -> Moments:
    """:class:`Moments` from the native kernel's float64 sums, in the data's dtype.

    float64 holds every square and product of float32 data, so no unit is
    needed; the results round once, to the data's dtype, at the end.
    """
    dtype = n.dtype
    n = n.double()
    sxx, syy = sxx.clamp(min=0), syy.clamp(min=0)
    slope = sxy / sxx
    ssr = (syy - slope * sxy).clamp(min=0)
    norm_x, norm_y = sxx.sqrt(), syy.sqrt()
    fields = torch.stack([mean_x, mean_y, norm_x, norm_y, sxy / (norm_x * norm_y), slope,
                          ssr.sqrt(), ssr / n, ssr / syy])
    return Moments(*fields.to(dtype).unbind())  # one cast for all nine
