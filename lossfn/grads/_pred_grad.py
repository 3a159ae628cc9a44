"""Closed-form gradients of the canonical losses with respect to the predictions."""

from __future__ import annotations

from typing import Optional, Union

import math

import torch

from .._checks import as_parameter, check_choice, check_pair, check_reduction, check_weight
from .._errors import ShapeError

__all__ = ["pred_grad", "LOSS_NAMES"]

#: The losses :func:`pred_grad` and :func:`lossfn.shares` know in closed form.
LOSS_NAMES = ("mse", "mae", "huber")

Param = Union[float, torch.Tensor]


def check_loss_name(fn: str, loss: object) -> str:
    """Return ``loss`` if it names a loss with a closed-form derivative here."""
    return check_choice(fn, "loss", loss, LOSS_NAMES, "For another loss use torch.func.grad on it.")


def derivative(residual: torch.Tensor, loss: str, delta: Param) -> torch.Tensor:
    """``dℓ/dε`` elementwise for ``ℓ = ε²``, ``|ε|`` or ``ρ_δ(ε)``; ``ε = ŷ − y``.

    ``sign`` is 0 at 0 (torch's subgradient of ``|ε|``), and the clip keeps the
    quadratic branch at ``|ε| = δ`` (both sides agree there: ``±δ``).
    """
    if loss == "mse":
        return 2.0 * residual
    if loss == "mae":
        return torch.sign(residual)
    if isinstance(delta, torch.Tensor):
        clipped = torch.minimum(torch.maximum(residual, -delta), delta)
        # Outside the domain δ > 0: nan, as lossfn.huber gives, not a silent clamp.
        return torch.where(delta > 0, clipped, math.nan)
    if not delta > 0:
        return torch.full_like(residual, math.nan)
    return residual.clamp(-delta, delta)


def pred_grad(
    pred: torch.Tensor,
    target: torch.Tensor,
    *,
    loss: str = "mse",
    delta: Param = 1.0,
    reduction: str = "mean",
    weight: Optional[torch.Tensor] = None,
) -> torch.Tensor:
    r"""``∂L/∂ŷ`` of mse, mae or huber (:mod:`lossfn.losses`) in closed form.

    With ``ε = ŷ − y`` and ``m`` elements, for ``reduction="mean"``:

    ========  ==============================  ==============================
    loss      noise model                     ``∂L/∂ŷ_i``
    ========  ==============================  ==============================
    ``mse``   Gaussian                        ``(2/m)·ε_i``
    ``mae``   Laplace                         ``(1/m)·sign(ε_i)``, 0 at ``ε_i = 0``
    ``huber`` Huber(δ)                        ``(1/m)·clip(ε_i, −δ, δ)``
    ========  ==============================  ==============================

    Under the Gaussian model a point pulls in proportion to its residual, under
    the Laplace model every point pulls equally hard: an outlier with residual 72
    pulls 72 times harder under mse than under mae. ``"sum"`` drops the ``1/m``;
    ``"none"`` gives each element's own derivative ``dℓ_i/dŷ_i`` (so the same as
    ``"sum"``). With weights, ``"mean"`` is ``w_i·ℓ'(ε_i)/Σw`` and the others
    ``w_i·ℓ'(ε_i)``. Equal to autograd of the loss, at the kinks too; no Python
    branch on values, so it runs under ``torch.func`` transforms.

    Args:
        pred: predictions ``ŷ``, any shape.
        target: targets ``y``, the same shape.
        loss: ``"mse"`` (default), ``"mae"`` or ``"huber"``.
        delta: Huber's ``δ > 0`` (float or tensor broadcastable to ``pred``).
        reduction: the reduction of the loss being differentiated.
        weight: optional weights broadcastable to ``pred``, as in the losses.

    Returns:
        A tensor of ``pred``'s shape.

    Example:
        >>> import torch, lossfn
        >>> pred = torch.tensor([84.0, 89.0, 87.0, 91.0, 87.0])
        >>> target = torch.tensor([85.0, 90.0, 88.0, 92.0, 15.0])
        >>> lossfn.pred_grad(pred, target, loss="mse")
        tensor([-0.4000, -0.4000, -0.4000, -0.4000, 28.8000])
        >>> lossfn.pred_grad(pred, target, loss="mae")
        tensor([-0.2000, -0.2000, -0.2000, -0.2000,  0.2000])
    """
    fn = "pred_grad"
    check_pair(fn, pred, target)
    check_reduction(fn, reduction)
    check_loss_name(fn, loss)
    delta = as_parameter("pred_grad", "delta", delta, pred)
    slope = derivative(pred - target, loss, delta)
    if slope.shape != pred.shape:
        raise ShapeError(
            f"{fn}: delta of shape {tuple(delta.shape)} must broadcast to pred's shape "
            f"{tuple(pred.shape)} without enlarging it."
        )
    if weight is not None:
        check_weight(fn, weight, pred.shape)
        slope = slope * weight
        if reduction == "mean":
            return slope / weight.expand_as(pred).sum()
        return slope
    if reduction == "mean":
        return slope / pred.numel()
    return slope
