"""Exact negative log-likelihoods of the three noise models, constants included.

=================  ===========================================================
function           ``−log p(target | pred)`` per element, ``ε = target − pred``
=================  ===========================================================
``gaussian_nll``   ``ε²/(2σ²) + log σ + ½ log 2π``
``laplace_nll``    ``|ε|/b + log 2b``
``huber_nll``      ``ρ_δ(ε/s) + log s + log Z(δ)``
=================  ===========================================================

with ``Z(δ) = √(2π)·(2Φ(δ) − 1) + (2/δ)·exp(−δ²/2)`` the normalizer of Huber's
density ``exp(−ρ_δ(ε))/Z(δ)``. Each NLL is its canonical loss times a positive
factor plus a constant that depends only on the scale, so minimizing the loss
over ``pred`` is maximum likelihood.

``scale`` (and ``delta``) may be floats or tensors that broadcast with ``pred``
by NumPy rules, so heteroscedastic models (one scale per point) and vmapped
batches of scales work. The domain is ``scale > 0`` and ``delta > 0``; outside it
the result is inf or nan rather than an exception, so the functions stay safe
under ``torch.func`` transforms. The ``nn`` criteria and noise models validate.
"""

from __future__ import annotations

import math
from typing import Optional, Union

import torch
import torch.nn.functional as F

from ._checks import as_parameter, check_pair, check_reduction, check_weight, safe_log
from ._reduce import reduce
from .losses import huber_rho

__all__ = ["gaussian_nll", "laplace_nll", "huber_nll", "huber_log_normalizer"]

Param = Union[float, torch.Tensor]

_HALF_LOG_2PI = 0.5 * math.log(2.0 * math.pi)
_SQRT_2PI = math.sqrt(2.0 * math.pi)


def huber_log_normalizer(delta: Param) -> Param:
    r"""``log Z(δ)`` for Huber's density, a float for a float and a tensor for a tensor.

    .. math:: Z(\delta) = \sqrt{2\pi}\,(2\Phi(\delta) - 1) + \frac{2}{\delta} e^{-\delta^2/2}

    ``2Φ(δ) − 1`` is computed as ``erf(δ/√2)``. Returns nan for ``δ ≤ 0``.

    Example:
        >>> from lossfn.nll import huber_log_normalizer
        >>> round(huber_log_normalizer(1.345), 6)
        0.978598
    """
    if isinstance(delta, torch.Tensor):
        z = _SQRT_2PI * torch.erf(delta / math.sqrt(2.0)) + 2.0 / delta * torch.exp(
            -0.5 * delta * delta
        )
        return torch.where(delta > 0, torch.log(z), math.nan)
    if not delta > 0:
        return math.nan
    return math.log(
        _SQRT_2PI * math.erf(delta / math.sqrt(2.0))
        + 2.0 / delta * math.exp(-0.5 * delta * delta)
    )


def _affine(
    fused: torch.Tensor,
    factor: float,
    constant: float,
    reduction: str,
    numel: int,
) -> torch.Tensor:
    """``factor·loss + constant``, reduced: the fast path for float parameters."""
    if reduction == "sum":
        return fused * factor + constant * numel
    return fused * factor + constant


def _is_scalar(scale: Param) -> bool:
    """A positive float or a 0-dim tensor: one factor for all elements (fast path)."""
    if isinstance(scale, torch.Tensor):
        return scale.dim() == 0
    return scale > 0


def _log(value: Param) -> Param:
    return torch.log(value) if isinstance(value, torch.Tensor) else safe_log(value)


def gaussian_nll(
    pred: torch.Tensor,
    target: torch.Tensor,
    *,
    scale: Param = 1.0,
    reduction: str = "mean",
    weight: Optional[torch.Tensor] = None,
) -> torch.Tensor:
    r"""Exact Gaussian negative log-likelihood ``−log N(target | pred, scale²)``.

    .. math:: \ell_i = \frac{(y_i - \hat y_i)^2}{2\sigma^2} + \log\sigma
              + \tfrac12\log 2\pi

    Args:
        pred: the mean ``ŷ``, any shape.
        target: observations ``y``, the same shape as ``pred``.
        scale: the standard deviation ``σ > 0`` (as in ``torch.distributions.Normal``;
            torch's ``gaussian_nll_loss`` takes a variance): a float or a tensor
            broadcastable with ``pred``; it may require grad.
        reduction: ``"mean"``, ``"sum"`` or ``"none"``; ``"mean"`` with weights is
            ``Σwℓ/Σw``.
        weight: optional weights broadcastable to the per-element loss.

    Returns:
        A scalar, or the per-element NLL (shape of ``pred`` broadcast with
        ``scale``) for ``reduction="none"``. Equals
        ``-torch.distributions.Normal(pred, scale).log_prob(target)``.

    Example:
        >>> import torch, lossfn
        >>> lossfn.gaussian_nll(torch.zeros(1), torch.zeros(1), scale=1.0)  # ½ log 2π
        tensor(0.9189)
    """
    check_pair("gaussian_nll", pred, target)
    check_reduction("gaussian_nll", reduction)
    scale = as_parameter("gaussian_nll", "scale", scale, pred)
    if weight is None and _is_scalar(scale):
        # One fused squared-error pass, then an affine map: as fast as mse.
        fused = F.mse_loss(pred, target, reduction=reduction)
        constant = _log(scale) + _HALF_LOG_2PI
        return _affine(fused, 0.5 / (scale * scale), constant,
                       reduction, pred.numel())
    z = (target - pred) / scale
    per_element = 0.5 * z * z + _log(scale) + _HALF_LOG_2PI
    check_weight("gaussian_nll", weight, per_element.shape)
    return reduce(per_element, reduction, weight)


def laplace_nll(
    pred: torch.Tensor,
    target: torch.Tensor,
    *,
    scale: Param = 1.0,
    reduction: str = "mean",
    weight: Optional[torch.Tensor] = None,
) -> torch.Tensor:
    r"""Exact Laplace negative log-likelihood ``−log Laplace(target | pred, scale)``.

    .. math:: \ell_i = \frac{|y_i - \hat y_i|}{b} + \log 2b

    Args:
        pred: the location ``ŷ``, any shape.
        target: observations ``y``, the same shape as ``pred``.
        scale: ``b > 0``, a float or a tensor broadcastable with ``pred``.
        reduction: ``"mean"``, ``"sum"`` or ``"none"``.
        weight: optional weights broadcastable to the per-element loss.

    Returns:
        A scalar or the per-element NLL; equals
        ``-torch.distributions.Laplace(pred, scale).log_prob(target)``.

    Example:
        >>> import torch, lossfn
        >>> lossfn.laplace_nll(torch.zeros(1), torch.ones(1), scale=0.5)  # 2 + log 1
        tensor(2.)
    """
    check_pair("laplace_nll", pred, target)
    check_reduction("laplace_nll", reduction)
    scale = as_parameter("laplace_nll", "scale", scale, pred)
    if weight is None and _is_scalar(scale):
        fused = F.l1_loss(pred, target, reduction=reduction)
        return _affine(fused, 1.0 / scale, _log(2.0 * scale), reduction, pred.numel())
    per_element = (target - pred).abs() / scale + _log(2.0 * scale)
    check_weight("laplace_nll", weight, per_element.shape)
    return reduce(per_element, reduction, weight)


def huber_nll(
    pred: torch.Tensor,
    target: torch.Tensor,
    *,
    delta: Param = 1.345,
    scale: Param = 1.0,
    reduction: str = "mean",
    weight: Optional[torch.Tensor] = None,
) -> torch.Tensor:
    r"""Exact negative log-likelihood of Huber's density.

    Huber's density with threshold ``δ`` and scale ``s`` is
    ``p(ε) = exp(−ρ_δ(ε/s)) / (s·Z(δ))``, so

    .. math:: \ell_i = \rho_\delta\!\left(\frac{y_i - \hat y_i}{s}\right)
              + \log s + \log Z(\delta)

    It is Gaussian in the centre and Laplace-like (exponential) in the tails;
    ``δ = 1.345`` gives 95% efficiency at the normal model.

    Args:
        pred: the location ``ŷ``, any shape.
        target: observations ``y``, the same shape as ``pred``.
        delta: ``δ > 0`` in units of ``scale``; float or broadcastable tensor.
        scale: ``s > 0``; float or broadcastable tensor.
        reduction: ``"mean"``, ``"sum"`` or ``"none"``.
        weight: optional weights broadcastable to the per-element loss.

    Returns:
        A scalar or the per-element NLL.

    Example:
        >>> import torch, lossfn
        >>> round(lossfn.huber_nll(torch.zeros(1), torch.zeros(1)).item(), 6)  # log Z(1.345)
        0.978598
    """
    check_pair("huber_nll", pred, target)
    check_reduction("huber_nll", reduction)
    delta = as_parameter("huber_nll", "delta", delta, pred)
    scale = as_parameter("huber_nll", "scale", scale, pred)
    if (
        weight is None
        and isinstance(delta, float)
        and isinstance(scale, float)
        and delta > 0
        and scale > 0
    ):
        # ρ_δ(ε/s) = ρ_{δs}(ε)/s², so torch's fused kernel does the work.
        fused = F.huber_loss(pred, target, reduction=reduction, delta=delta * scale)
        constant = math.log(scale) + huber_log_normalizer(delta)
        return _affine(fused, 1.0 / (scale * scale), constant,
                       reduction, pred.numel())
    log_scale = _log(scale)
    if isinstance(scale, float) and not scale > 0:
        scale = math.nan  # outside the domain: nan, as for a tensor scale
    standardized = (target - pred) / scale
    per_element = huber_rho(standardized, delta) + log_scale + huber_log_normalizer(delta)
    check_weight("huber_nll", weight, per_element.shape)
    return reduce(per_element, reduction, weight)
