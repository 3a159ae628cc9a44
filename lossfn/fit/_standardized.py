r"""The regression line in standardized variables: ``z_y = ρ̂·z_x``.

With ``z_x = (x − x̄)/σ̂_x`` and ``z_y = (y − ȳ)/σ̂_y`` (ddof 0), the least-squares
line through the standardized points has intercept 0 and slope the sample
correlation ``ρ̂ = Sxy/√(Sxx·Syy)``; back in the original units it is the OLS
line, ``β̂ = ρ̂·σ̂_y/σ̂_x`` and ``α̂ = ȳ − β̂·x̄`` (the Gaussian-noise MLE).
"""

from __future__ import annotations

from typing import NamedTuple, Optional

import torch

from ._design import moments, noise_floor, prepare

__all__ = ["Standardized", "standardized"]


class Standardized(NamedTuple):
    """Means, standard deviations (ddof 0) and correlation, one entry per dataset.

    ``ok`` is False (and every float field nan) for a dataset without points,
    with a constant ``x`` or ``y``, or with nan/inf in a present point.
    """

    mean_x: torch.Tensor
    mean_y: torch.Tensor
    std_x: torch.Tensor
    std_y: torch.Tensor
    rho: torch.Tensor
    n: torch.Tensor
    ok: torch.Tensor


def standardized(
    x: torch.Tensor, y: torch.Tensor, *, mask: Optional[torch.Tensor] = None
) -> Standardized:
    """Standardized form of one-predictor data: ``x̄, ȳ, σ̂_x, σ̂_y`` and ``ρ̂``, batched.

    Moments come from shifted sums (accurate with large offsets); absent
    points are never read. Runs under ``torch.func.vmap``.

    Args:
        x: (..., m) predictor.
        y: (..., m) response, same dtype (float32 or float64).
        mask: optional bool (..., m), True where a point exists.

    Returns:
        :class:`Standardized`, each field of the batch shape ``...``.

    Example:
        >>> import torch
        >>> from lossfn import fit
        >>> s = fit.standardized(torch.tensor([1.0, 2.0, 3.0]), torch.tensor([2.0, 4.0, 7.0]))
        >>> s.std_x, s.rho
        (tensor(0.8165), tensor(0.9934))
        >>> s.rho * s.std_y / s.std_x        # the OLS slope
        tensor(2.5000)
    """
    data = prepare("standardized", x, y, mask)
    if not data.simple:
        raise ValueError(
            f"standardized: x must have one predictor, shape (..., m) like y "
            f"{tuple(data.y.shape)}; got {tuple(x.shape)}. For d predictors, "
            "standardize each column or use fit.ols."
        )
    mo = moments(data)
    n = data.n
    rho = mo.corr
    std_x, std_y = mo.norm_x / n.sqrt(), mo.norm_y / n.sqrt()
    ok = (
        (mo.norm_x > noise_floor(mo.mean_x, n))
        & (mo.norm_y > noise_floor(mo.mean_y, n))
        & torch.isfinite(rho)
        & torch.isfinite(mo.norm_x)  # overflowed: rho would read 0
        & torch.isfinite(mo.norm_y)
        & torch.isfinite(mo.mean_x)
        & torch.isfinite(mo.mean_y)
    )

    def guard(v: torch.Tensor) -> torch.Tensor:
        return torch.where(ok, v, torch.nan)

    return Standardized(
        guard(mo.mean_x), guard(mo.mean_y), guard(std_x), guard(std_y),
        guard(rho.clamp(-1, 1)), n.to(torch.int64), ok,
    )
