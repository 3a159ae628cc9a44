"""Turn ``x``, ``y`` and a mask into centred data: the shared first step of every fit.

Two things make closed-form fits inaccurate, and both are handled here:

* Offsets. ``Σx² − n·x̄²`` loses every digit that the offset ``x̄`` shares with
  the data (``x ≈ 1e4 + U(0, 1)`` in float32 has none left). The data are
  centred on a first-pass mean ``c`` instead, and the moments are the shifted
  sums ``Σ(x − c)² − (Σ(x − c))²/n``: the correction is tiny, so nothing
  cancels, and the result is the exact-mean value to working precision.
* Absent points. Masked-out entries are replaced by zeros with ``torch.where``
  before any arithmetic, so nan or 1e30 there cannot leak into a sum
  (multiplying by a 0/1 weight would not do: ``0 · nan`` is nan).

Everything is free of Python branches on tensor values (``torch.func.vmap``-safe).
"""

from __future__ import annotations

from typing import NamedTuple, Optional

import torch

from .._checks import check_regression_data

__all__ = ["Data", "prepare", "zero_absent", "noise_floor", "moments", "Moments"]


class Data(NamedTuple):
    """Validated inputs of a fit; ``present`` is None when every point exists."""

    x: torch.Tensor  # (..., m) or (..., m, d)
    y: torch.Tensor  # (..., m)
    present: Optional[torch.Tensor]  # (..., m) bool, broadcast to y's shape
    n: torch.Tensor  # (...,) number of present points, in x's dtype
    simple: bool  # x is (..., m): one predictor


def prepare(fn: str, x: object, y: object, mask: Optional[torch.Tensor]) -> Data:
    """Validate (:func:`lossfn._checks.check_regression_data`) and broadcast the inputs."""
    simple, batch = check_regression_data(fn, x, y, mask)
    m = y.shape[-1]
    shape = batch + (m,)
    x = x.expand(shape if simple else shape + x.shape[-1:])
    y = y.expand(shape)
    if mask is None:
        return Data(x, y, None, y.new_full(batch, float(m)), simple)
    present = mask.expand(shape)
    return Data(x, y, present, present.sum(-1).to(y.dtype), simple)


def zero_absent(v: torch.Tensor, present: Optional[torch.Tensor]) -> torch.Tensor:
    """``v`` with absent points set to 0 (``present`` aligned with ``v``'s dims)."""
    return v if present is None else torch.where(present, v, 0.0)


def noise_floor(centre: torch.Tensor, n: torch.Tensor) -> torch.Tensor:
    """Norm below which a centred column is rounding noise, not data.

    Centring ``x ≈ c`` leaves errors of about ``eps·|c|`` per point, so a column
    of norm below ``8·eps·|c|·√n`` carries no information (a constant column
    centres to exactly 0 or to such noise).
    """
    eps = torch.finfo(centre.dtype).eps
    return 8 * eps * centre.abs() * n.sqrt()


class Moments(NamedTuple):
    """Centred moments of (x, y), one entry per dataset (``Syy`` is left to the caller)."""

    mean_x: torch.Tensor
    mean_y: torch.Tensor
    sxx: torch.Tensor  # Σ(x − x̄)²
    sxy: torch.Tensor  # Σ(x − x̄)(y − ȳ)
    dx: torch.Tensor  # x − c_x (first-pass centre), 0 where absent, (..., m)
    dy: torch.Tensor
    sum_dx: torch.Tensor  # Σ dx = n·(x̄ − c_x), tiny
    sum_dy: torch.Tensor


def _shifted(v: torch.Tensor, weight: Optional[torch.Tensor], n: torch.Tensor):
    # v is already 0 where absent; v − c·w keeps it 0 there in one fused op.
    centre = v.sum(-1) / n
    if weight is None:
        shifted = v - centre.unsqueeze(-1)
    else:
        shifted = torch.addcmul(v, weight, centre.unsqueeze(-1), value=-1)
    return centre, shifted, shifted.sum(-1)


def moments(data: Data) -> Moments:
    """Centred moments of one predictor and the response, by shifted sums.

    With ``c`` the first-pass mean and ``dx = x − c``:
    ``x̄ = c + Σdx/n``, ``Sxx = Σdx² − (Σdx)²/n``, ``Sxy = Σdx·dy − Σdx·Σdy/n``.
    """
    n = data.n
    weight = None if data.present is None else data.present.to(data.x.dtype)
    cx, dx, sum_dx = _shifted(zero_absent(data.x, data.present), weight, n)
    cy, dy, sum_dy = _shifted(zero_absent(data.y, data.present), weight, n)
    # vecdot, not vector_norm(...)²: the slope feeds α = ȳ − β·x̄, which
    # magnifies its last-ulp errors (Norris loses a digit with the norm).
    sxx = torch.linalg.vecdot(dx, dx) - sum_dx * sum_dx / n
    sxy = torch.linalg.vecdot(dx, dy) - sum_dx * sum_dy / n
    return Moments(cx + sum_dx / n, cy + sum_dy / n, sxx, sxy, dx, dy, sum_dx, sum_dy)
