"""``nn.Module`` criteria: thin stateful wrappers over the functional losses.

Each criterion stores its hyperparameters, validates them once at
construction, and its ``forward`` is one call into the functional core.
Where torch has a criterion of the same name, ``criterion(pred, target)`` is a
drop-in replacement, except that a shape mismatch raises
:class:`lossfn.ShapeError` instead of broadcasting.

The NLL criteria either take the scale per call (heteroscedastic models
predict it) or own it: ``learn_scale=True`` registers one ``nn.Parameter``,
``log_scale``, whose optimum under training is the scale MLE (for the
Gaussian, ``σ² =`` the mean squared residual of the fit).
"""

from __future__ import annotations

from typing import Optional, Union

import torch
from torch import nn

from ._checks import check_positive, check_reduction
from .losses import huber, mae, mse
from .nll import gaussian_nll, huber_nll, laplace_nll

__all__ = [
    "MSELoss",
    "MAELoss",
    "L1Loss",
    "HuberLoss",
    "GaussianNLLLoss",
    "LaplaceNLLLoss",
    "HuberNLLLoss",
]

Param = Union[float, torch.Tensor]


class _Criterion(nn.Module):
    """Base of the criteria: ``forward(pred, target, weight=None)`` (NLL criteria
    also take ``scale=``), with ``pred``/``target`` of one shape and ``weight``
    broadcastable to it; returns what the functional returns for ``reduction``."""

    def __init__(self, *, reduction: str = "mean"):
        super().__init__()
        self.reduction = check_reduction(type(self).__name__, reduction)

    def extra_repr(self) -> str:
        return f"reduction={self.reduction!r}"


class MSELoss(_Criterion):
    """Squared error, :func:`lossfn.mse`; drop-in for ``torch.nn.MSELoss``.

    Example:
        >>> import torch, lossfn
        >>> lossfn.nn.MSELoss()(torch.tensor([1.0, 3.0]), torch.tensor([0.0, 0.0]))
        tensor(5.)
    """

    def forward(self, pred, target, weight: Optional[torch.Tensor] = None):
        return mse(pred, target, reduction=self.reduction, weight=weight)


class MAELoss(_Criterion):
    """Absolute error, :func:`lossfn.mae`; drop-in for ``torch.nn.L1Loss``.

    Example:
        >>> import torch, lossfn
        >>> lossfn.nn.MAELoss(reduction="sum")(torch.tensor([1.0, -3.0]), torch.zeros(2))
        tensor(4.)
    """

    def forward(self, pred, target, weight: Optional[torch.Tensor] = None):
        return mae(pred, target, reduction=self.reduction, weight=weight)


#: Alias with torch's name.
L1Loss = MAELoss


class HuberLoss(_Criterion):
    """Huber loss, :func:`lossfn.huber`; drop-in for ``torch.nn.HuberLoss``.

    Args:
        delta: threshold ``δ > 0`` (float or tensor), validated here.
        reduction: ``"mean"``, ``"sum"`` or ``"none"``.

    Example:
        >>> import torch, lossfn
        >>> lossfn.nn.HuberLoss(delta=1.0)(torch.tensor([3.0]), torch.zeros(1))
        tensor(2.5000)
    """

    def __init__(self, *, delta: Param = 1.0, reduction: str = "mean"):
        super().__init__(reduction=reduction)
        self.delta = check_positive("HuberLoss", "delta", delta)

    def forward(self, pred, target, weight: Optional[torch.Tensor] = None):
        return huber(pred, target, delta=self.delta, reduction=self.reduction, weight=weight)

    def extra_repr(self) -> str:
        return f"delta={self.delta!r}, reduction={self.reduction!r}"


class _NLLCriterion(_Criterion):
    """Shared scale handling: per call, fixed, or learned as ``log_scale``."""

    def __init__(self, *, scale: Optional[Param], learn_scale: bool, reduction: str):
        super().__init__(reduction=reduction)
        name = type(self).__name__
        self.learn_scale = bool(learn_scale)
        if scale is not None:
            scale = check_positive(name, "scale", scale)
        if self.learn_scale:
            start = torch.log(torch.as_tensor(1.0 if scale is None else scale,
                                              dtype=torch.get_default_dtype()))
            self.log_scale = nn.Parameter(start.clone())
            self.scale = None
        else:
            self.scale = scale

    def _scale(self, scale: Optional[Param]) -> Param:
        if scale is not None:
            if self.learn_scale:
                raise ValueError(
                    f"{type(self).__name__}: this criterion learns its scale "
                    "(learn_scale=True); do not also pass scale= to forward."
                )
            return scale
        if self.learn_scale:
            return self.log_scale.exp()
        if self.scale is None:
            raise ValueError(
                f"{type(self).__name__}: no scale. Pass scale= to forward (a tensor "
                "broadcastable to pred, e.g. predicted by the model), give scale= at "
                "construction, or use learn_scale=True."
            )
        return self.scale

    def extra_repr(self) -> str:
        if self.learn_scale:
            what = "learn_scale=True"
        elif self.scale is None:
            what = "scale=per call"
        else:
            what = f"scale={self.scale!r}"
        return f"{what}, reduction={self.reduction!r}"


class GaussianNLLLoss(_NLLCriterion):
    """Exact Gaussian NLL, :func:`lossfn.gaussian_nll`, with σ a standard deviation.

    Unlike ``torch.nn.GaussianNLLLoss`` (which takes a variance per call and drops
    the constant), this is the full ``−log N(y | ŷ, σ²)``.

    Args:
        scale: fixed σ > 0, or the initial σ with ``learn_scale=True``, or None
            to pass ``scale=`` to every call.
        learn_scale: own a learnable ``log_scale`` parameter.
        reduction: ``"mean"``, ``"sum"`` or ``"none"``.

    Example:
        >>> import torch, lossfn
        >>> crit = lossfn.nn.GaussianNLLLoss(learn_scale=True)
        >>> crit
        GaussianNLLLoss(learn_scale=True, reduction='mean')
        >>> [name for name, _ in crit.named_parameters()]
        ['log_scale']
    """

    def __init__(self, *, scale: Optional[Param] = None, learn_scale: bool = False,
                 reduction: str = "mean"):
        super().__init__(scale=scale, learn_scale=learn_scale, reduction=reduction)

    def forward(self, pred, target, scale: Optional[Param] = None,
                weight: Optional[torch.Tensor] = None):
        return gaussian_nll(pred, target, scale=self._scale(scale),
                            reduction=self.reduction, weight=weight)


class LaplaceNLLLoss(_NLLCriterion):
    """Exact Laplace NLL, :func:`lossfn.laplace_nll`.

    Args:
        scale: fixed ``b > 0``, the initial ``b`` with ``learn_scale=True``, or None.
        learn_scale: own a learnable ``log_scale``; its optimum is ``b = mean|ε|``.
        reduction: ``"mean"``, ``"sum"`` or ``"none"``.

    Example:
        >>> import torch, lossfn
        >>> lossfn.nn.LaplaceNLLLoss(scale=0.5)(torch.zeros(1), torch.ones(1))
        tensor(2.)
    """

    def __init__(self, *, scale: Optional[Param] = None, learn_scale: bool = False,
                 reduction: str = "mean"):
        super().__init__(scale=scale, learn_scale=learn_scale, reduction=reduction)

    def forward(self, pred, target, scale: Optional[Param] = None,
                weight: Optional[torch.Tensor] = None):
        return laplace_nll(pred, target, scale=self._scale(scale),
                           reduction=self.reduction, weight=weight)


class HuberNLLLoss(_NLLCriterion):
    """Exact NLL of Huber's density, :func:`lossfn.huber_nll`.

    Args:
        delta: ``δ > 0`` in units of the scale.
        scale: fixed ``s > 0``, the initial ``s`` with ``learn_scale=True``, or None.
        learn_scale: own a learnable ``log_scale``.
        reduction: ``"mean"``, ``"sum"`` or ``"none"``.

    Example:
        >>> import torch, lossfn
        >>> crit = lossfn.nn.HuberNLLLoss(delta=1.345, scale=1.0)
        >>> round(crit(torch.zeros(1), torch.zeros(1)).item(), 6)
        0.978598
    """

    def __init__(self, *, delta: Param = 1.345, scale: Optional[Param] = None,
                 learn_scale: bool = False, reduction: str = "mean"):
        super().__init__(scale=scale, learn_scale=learn_scale, reduction=reduction)
        self.delta = check_positive("HuberNLLLoss", "delta", delta)

    def forward(self, pred, target, scale: Optional[Param] = None,
                weight: Optional[torch.Tensor] = None):
        return huber_nll(pred, target, delta=self.delta, scale=self._scale(scale),
                         reduction=self.reduction, weight=weight)

    def extra_repr(self) -> str:
        return f"delta={self.delta!r}, " + super().extra_repr()
