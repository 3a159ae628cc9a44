"""The canonical regression losses: squared, absolute and Huber error.

Each one is, up to a positive factor and an additive constant, the negative
log-likelihood of a noise model (see :mod:`lossfn.nll`):

=========  ==========================================  =================
loss       per element ``ℓ(ε)``, ``ε = pred − target``  noise model
=========  ==========================================  =================
``mse``    ``ε²``                                       Gaussian
``mae``    ``|ε|``                                      Laplace
``huber``  ``½ε²`` if ``|ε| ≤ δ`` else ``δ(|ε| − ½δ)``  Huber
=========  ==========================================  =================

All three take data positionally and everything else by keyword, refuse
``pred``/``target`` shape mismatches with :class:`lossfn.ShapeError`, and run
under ``torch.func.vmap``, ``grad``, ``jacrev`` and ``hessian``.
"""

from __future__ import annotations

import math
from typing import Optional, Union

import torch
import torch.nn.functional as F

from ._checks import as_parameter, check_pair, check_reduction, check_weight
from ._reduce import reduce

__all__ = ["mse", "mae", "huber", "huber_rho"]


def mse(
    pred: torch.Tensor,
    target: torch.Tensor,
    *,
    reduction: str = "mean",
    weight: Optional[torch.Tensor] = None,
) -> torch.Tensor:
    r"""Mean squared error, the Gaussian negative log-likelihood up to constants.

    .. math:: \ell_i = (\hat y_i - y_i)^2, \qquad
              \text{mean} = \frac{\sum_i w_i \ell_i}{\sum_i w_i}

    Args:
        pred: predictions ``ŷ``, any shape, floating point.
        target: targets ``y``, the same shape as ``pred``.
        reduction: ``"mean"`` (default), ``"sum"`` or ``"none"``.
        weight: optional weights that broadcast to ``pred``'s shape.

    Returns:
        A scalar, or a tensor of ``pred``'s shape for ``reduction="none"``.
        Without weights the values equal ``torch.nn.functional.mse_loss``.

    Example:
        >>> import torch, lossfn
        >>> pred = torch.tensor([140.0, 210.0, 245.0, 310.0, 360.0])
        >>> target = torch.tensor([150.0, 200.0, 250.0, 300.0, 350.0])
        >>> lossfn.mse(pred, target)
        tensor(85.)
    """
    check_pair("mse", pred, target)
    check_reduction("mse", reduction)
    if weight is None:
        # The fused kernel is as exact as the formula and about twice as fast.
        return F.mse_loss(pred, target, reduction=reduction)
    check_weight("mse", weight, pred.shape)
    residual = pred - target
    return reduce(residual * residual, reduction, weight)


def mae(
    pred: torch.Tensor,
    target: torch.Tensor,
    *,
    reduction: str = "mean",
    weight: Optional[torch.Tensor] = None,
) -> torch.Tensor:
    r"""Mean absolute error, the Laplace negative log-likelihood up to constants.

    .. math:: \ell_i = |\hat y_i - y_i|

    The derivative at ``ŷ = y`` is 0 (the subgradient torch uses).

    Args:
        pred: predictions ``ŷ``, any shape, floating point.
        target: targets ``y``, the same shape as ``pred``.
        reduction: ``"mean"`` (default), ``"sum"`` or ``"none"``.
        weight: optional weights that broadcast to ``pred``'s shape.

    Returns:
        A scalar, or a tensor of ``pred``'s shape for ``reduction="none"``;
        equal to ``torch.nn.functional.l1_loss`` without weights.

    Example:
        >>> import torch, lossfn
        >>> pred = torch.tensor([1.1, 2.2, 2.8, 3.0], dtype=torch.float64)
        >>> target = torch.tensor([1.0, 2.0, 3.0, 100.0], dtype=torch.float64)
        >>> round(lossfn.mae(pred, target).item(), 10)   # the source text prints 24.325
        24.375
    """
    check_pair("mae", pred, target)
    check_reduction("mae", reduction)
    if weight is None:
        return F.l1_loss(pred, target, reduction=reduction)
    check_weight("mae", weight, pred.shape)
    return reduce((pred - target).abs(), reduction, weight)


def huber_rho(residual: torch.Tensor, delta: Union[float, torch.Tensor]) -> torch.Tensor:
    r"""Huber's function :math:`\rho_\delta(\varepsilon)`, elementwise, without checks.

    .. math:: \rho_\delta(\varepsilon) = \begin{cases}
              \tfrac12\varepsilon^2 & |\varepsilon| \le \delta \\
              \delta(|\varepsilon| - \tfrac12\delta) & \text{otherwise}\end{cases}

    Written with ``torch.where`` so it has no Python branch; at ``|ε| = δ`` it
    takes the quadratic branch, so the second derivative there is 1. Both
    branches are finite everywhere, so no nan leaks into the gradient. ``delta``
    may be a tensor that broadcasts against ``residual`` (and is differentiable);
    for ``δ ≤ 0`` the result is nan.

    Example:
        >>> import torch
        >>> from lossfn.losses import huber_rho
        >>> huber_rho(torch.tensor([-3.0, 0.5, 1.0]), 1.0)
        tensor([2.5000, 0.1250, 0.5000])
    """
    if isinstance(delta, (int, float)) and not delta > 0:
        return torch.full_like(residual, math.nan)
    size = residual.abs()
    quadratic = 0.5 * residual * residual
    linear = delta * (size - 0.5 * delta)
    rho = torch.where(size <= delta, quadratic, linear)
    if isinstance(delta, torch.Tensor):
        # Outside the domain δ > 0 the value is nan, without a Python branch.
        rho = torch.where(delta > 0, rho, math.nan)
    return rho


def huber(
    pred: torch.Tensor,
    target: torch.Tensor,
    *,
    delta: Union[float, torch.Tensor] = 1.0,
    reduction: str = "mean",
    weight: Optional[torch.Tensor] = None,
) -> torch.Tensor:
    r"""Huber loss: quadratic for small residuals, linear beyond ``delta``.

    .. math:: \ell_i = \rho_\delta(\hat y_i - y_i)

    It is the negative log-likelihood of Huber's least-favourable density
    (:func:`lossfn.huber_nll`) up to constants. ``delta > 0`` is the domain;
    outside it the result is not meaningful (no check is made here so that the
    function stays transform-safe; :class:`lossfn.nn.HuberLoss` validates).

    Args:
        pred: predictions ``ŷ``, any shape, floating point.
        target: targets ``y``, the same shape as ``pred``.
        delta: the threshold ``δ``: a float, or a tensor broadcastable to
            ``pred`` (differentiable, and free to differ across a vmapped batch).
        reduction: ``"mean"`` (default), ``"sum"`` or ``"none"``. With weights,
            ``"mean"`` is ``Σwℓ/Σw`` (torch's ``huber_loss`` has no weights).
        weight: optional weights that broadcast to ``pred``'s shape.

    Returns:
        A scalar, or a tensor of the broadcast shape for ``reduction="none"``;
        equal to ``torch.nn.functional.huber_loss`` for a float ``delta``.

    Example:
        >>> import torch, lossfn
        >>> lossfn.huber(torch.tensor([0.5, 3.0]), torch.zeros(2), delta=1.0, reduction="none")
        tensor([0.1250, 2.5000])
    """
    check_pair("huber", pred, target)
    check_reduction("huber", reduction)
    delta = as_parameter("huber", "delta", delta, pred)
    if isinstance(delta, float):
        if weight is None and delta > 0:
            return F.huber_loss(pred, target, reduction=reduction, delta=delta)
        per_element = huber_rho(pred - target, delta)
    else:
        # ρ_δ(ε) = δ²·ρ₁(ε/δ): torch's fused kernel with δ = 1 does the work, and
        # the gradient still flows to a tensor δ (vmapped or differentiable).
        outside = torch.where(delta > 0, 1.0, math.nan)
        fused_reduction = reduction if delta.dim() == 0 and weight is None else "none"
        # Subtract before dividing: quotients of nearby large numbers lose digits.
        standardized = (pred - target) / delta
        zero = standardized.new_zeros(()).expand_as(standardized)
        per_element = F.huber_loss(standardized, zero, reduction=fused_reduction)
        per_element = per_element * (delta * delta * outside)
        if fused_reduction != "none":
            return per_element
    check_weight("huber", weight, per_element.shape)
    return reduce(per_element, reduction, weight)
