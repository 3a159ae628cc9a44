"""Validation of shapes, dtypes and reductions, in one place.

Everything here looks only at shapes, dtypes and Python values, never at tensor
values, so it is safe to call under ``torch.func`` transforms.
"""

from __future__ import annotations

import math
from typing import Optional, Tuple, Union

import torch

from ._errors import ShapeError

__all__ = [
    "REDUCTIONS",
    "check_reduction",
    "check_float_tensor",
    "check_pair",
    "check_weight",
    "check_mask",
    "broadcasts_to",
    "squeeze_hint",
    "as_parameter",
    "check_positive",
    "check_fraction",
    "check_regression_data",
    "check_fit_options",
]

REDUCTIONS = ("mean", "sum", "none")

Scalar = Union[float, int, torch.Tensor]


def check_choice(fn: str, name: str, value: object, choices: tuple, hint: str = "") -> object:
    """Return ``value`` if it is one of ``choices``; else a ValueError naming them (and ``hint``)."""
    if value not in choices:
        raise ValueError(
            f"{fn}: {name} must be one of {choices}, got {value!r}." + (f" {hint}" if hint else "")
        )
    return value


def check_reduction(fn: str, reduction: str) -> str:
    """Return ``reduction`` if it is one of ``"mean"``, ``"sum"``, ``"none"``."""
    return check_choice(fn, "reduction", reduction, REDUCTIONS,
                        "Use 'none' to get the per-element values.")


def check_float_tensor(fn: str, name: str, value: object) -> torch.Tensor:
    """Require a real floating-point tensor (float16/bfloat16/float32/float64)."""
    if not isinstance(value, torch.Tensor):
        raise TypeError(
            f"{fn}: {name} must be a torch.Tensor, got {type(value).__name__}. "
            f"Wrap it with torch.as_tensor({name}, dtype=torch.float32)."
        )
    if value.is_complex():
        raise TypeError(
            f"{fn}: {name} has complex dtype {value.dtype}; regression losses are "
            "defined for real numbers. Pass the real part or the modulus."
        )
    if not value.is_floating_point():
        raise TypeError(
            f"{fn}: {name} has dtype {value.dtype}, but a floating-point tensor is "
            f"required (integer or bool values are usually class labels, not "
            f"regression targets). Convert with {name}.float()."
        )
    return value


def squeeze_hint(a: torch.Size, b: torch.Size, names=("pred", "target")) -> str:
    """The likely fix for two shapes that should be equal, naming the tensors."""
    first, second = names
    if len(a) == len(b) + 1 and a[-1] == 1 and a[:-1] == b:
        return f"{first} has a trailing dimension of size 1: use {first}.squeeze(-1)."
    if len(b) == len(a) + 1 and b[-1] == 1 and b[:-1] == a:
        return f"{second} has a trailing dimension of size 1: use {second}.squeeze(-1)."
    if len(a) == len(b) and sorted(a) == sorted(b):
        return "the dimensions look permuted: check the order of the axes."
    return "reshape one of them so that both have the same shape."


def check_pair(fn: str, pred: object, target: object) -> None:
    """Require float ``pred`` and ``target`` of exactly the same shape."""
    check_float_tensor(fn, "pred", pred)
    check_float_tensor(fn, "target", target)
    if pred.shape != target.shape:
        raise ShapeError(
            f"{fn}: pred and target must have the same shape, got pred "
            f"{tuple(pred.shape)} and target {tuple(target.shape)}; lossfn does "
            f"not broadcast them (torch only warns and pairs the wrong elements). "
            f"Fix: {squeeze_hint(pred.shape, target.shape)}"
        )


def broadcasts_to(shape: torch.Size, target: torch.Size) -> bool:
    """Whether ``shape`` broadcasts to ``target`` by NumPy rules without enlarging it."""
    try:
        return torch.broadcast_shapes(shape, target) == target
    except RuntimeError:
        return False


def check_weight(fn: str, weight: Optional[torch.Tensor], shape: torch.Size) -> None:
    """Require ``weight`` to broadcast to ``shape`` without enlarging it."""
    if weight is None:
        return
    check_float_tensor(fn, "weight", weight)
    if not broadcasts_to(weight.shape, shape):
        raise ShapeError(
            f"{fn}: weight of shape {tuple(weight.shape)} must broadcast to the "
            f"per-element loss of shape {tuple(shape)} without enlarging it. "
            "Give one weight per element (or per broadcastable slice)."
        )


def check_mask(fn: str, mask: Optional[torch.Tensor], shape: torch.Size) -> None:
    """Require a boolean ``mask`` that broadcasts to ``shape`` (the data's shape)."""
    if mask is None:
        return
    if not isinstance(mask, torch.Tensor) or mask.dtype != torch.bool:
        got = mask.dtype if isinstance(mask, torch.Tensor) else type(mask).__name__
        raise TypeError(
            f"{fn}: mask must be a bool tensor marking the points that exist, got "
            f"{got}. Build it with a comparison, e.g. mask = lengths[..., None] > "
            "torch.arange(m)."
        )
    if not broadcasts_to(mask.shape, shape):
        raise ShapeError(
            f"{fn}: mask of shape {tuple(mask.shape)} must broadcast to the data's "
            f"shape {tuple(shape)} (batch dims ..., then m points)."
        )


def check_regression_data(
    fn: str, x: object, y: object, mask: Optional[torch.Tensor]
) -> Tuple[bool, torch.Size]:
    """Validate regression data; return (one predictor?, broadcast batch shape).

    ``x`` of ``y``'s rank (..., m) means one predictor; one more dimension
    (..., m, d) means ``d`` predictors. ``y`` is (..., m); the point counts must
    agree exactly, batch dims (and ``mask``, bool (..., m)) broadcast. Both
    must be float32 or float64 of the same dtype.
    """
    check_float_tensor(fn, "x", x)
    check_float_tensor(fn, "y", y)
    if x.dtype != y.dtype:
        raise TypeError(
            f"{fn}: x has dtype {x.dtype} and y has dtype {y.dtype}; a fit is done "
            f"in one precision. Convert one of them, e.g. x.to(y.dtype)."
        )
    if x.dtype not in (torch.float32, torch.float64):
        raise TypeError(
            f"{fn}: dtype {x.dtype} is too coarse for a least-squares fit (and "
            "torch has no half-precision Cholesky); use float32 or float64, e.g. "
            "x.float() and y.float()."
        )
    if y.dim() == 0:
        raise ShapeError(f"{fn}: y must have a point dimension (..., m), got a scalar.")
    m = y.shape[-1]
    if x.dim() == y.dim():
        simple, x_points = True, x.shape[-1]
    elif x.dim() == y.dim() + 1:
        simple, x_points = False, x.shape[-2]
    else:
        hint = (
            " For one x shared by every dataset, give it y's batch rank: "
            "x.expand(*y.shape[:-1], *x.shape) (batch dims then broadcast)."
            if x.dim() < y.dim() else ""
        )
        raise ShapeError(
            f"{fn}: x must be (..., m) for one predictor or (..., m, d) for d "
            f"predictors, with the same batch rank as y (..., m); got x "
            f"{tuple(x.shape)} and y {tuple(y.shape)}.{hint}"
        )
    if x_points != m:
        hint = (
            " x looks transposed: pass x.mT so that points run along dim -2."
            if not simple and x.shape[-1] == m
            else ""
        )
        raise ShapeError(
            f"{fn}: x and y must have the same number of points m, got x "
            f"{tuple(x.shape)} ({x_points} points) and y {tuple(y.shape)} "
            f"({m} points).{hint}"
        )
    if not simple and x.shape[-1] == 0:
        raise ShapeError(f"{fn}: x {tuple(x.shape)} has no predictors (d = 0).")
    x_batch = x.shape[:-1] if simple else x.shape[:-2]
    try:
        # Equal shapes, the common case, spare broadcast_shapes (~70 µs with cold caches).
        batch = (y.shape[:-1] if x_batch == y.shape[:-1]
                 else torch.broadcast_shapes(x_batch, y.shape[:-1]))
    except RuntimeError:
        raise ShapeError(
            f"{fn}: the batch dims of x {tuple(x.shape)} and y {tuple(y.shape)} do "
            f"not broadcast ({tuple(x_batch)} vs {tuple(y.shape[:-1])}). Give one "
            "dataset per leading index."
        ) from None
    check_mask(fn, mask, batch + (m,))
    return simple, batch


def check_fit_options(fn: str, intercept: object, max_iter: object = None) -> None:
    """``intercept`` must be a bool and ``max_iter`` None or an int ≥ 0."""
    if not isinstance(intercept, bool):
        raise TypeError(f"{fn}: intercept must be True or False, got {intercept!r}.")
    if max_iter is not None and (isinstance(max_iter, bool) or not isinstance(max_iter, int)
                                 or max_iter < 0):
        raise ValueError(
            f"{fn}: max_iter must be None (the default) or an int >= 0, got {max_iter!r}."
        )


def as_parameter(fn: str, name: str, value: Scalar, like: torch.Tensor) -> Union[float, torch.Tensor]:
    """A Python number stays a float; a real tensor is cast to ``like``'s dtype and device.

    No value check: the functional core returns nan/inf outside a parameter's
    domain instead of raising, so that it stays transform-safe.
    """
    if isinstance(value, torch.Tensor):
        if value.is_complex() or not (value.is_floating_point() or value.dtype in _INT):
            raise TypeError(
                f"{fn}: {name} must be a real number or tensor, got dtype {value.dtype}. "
                f"Pass a float or a float tensor."
            )
        return value.to(dtype=like.dtype, device=like.device)
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(
            f"{fn}: {name} must be a float or a tensor, got {type(value).__name__} "
            f"{value!r}. Pass e.g. {name}=1.0 or {name}=torch.tensor(...)."
        )
    return float(value)


def check_positive(owner: str, name: str, value: Scalar) -> Union[float, torch.Tensor]:
    """Validate a hyperparameter that must be finite and > 0 (once, at construction).

    A number is returned as a float, a float tensor unchanged. This looks at
    values, so it belongs in constructors and wrappers, never under a transform.
    """
    if isinstance(value, torch.Tensor):
        if value.is_complex() or not value.is_floating_point():
            raise TypeError(
                f"{owner}: {name} must be a float tensor, got dtype {value.dtype}. "
                f"Use {name}.float() or a Python float."
            )
        if not bool((torch.isfinite(value) & (value > 0)).all()):
            raise ValueError(
                f"{owner}: {name} must be finite and > 0 everywhere, got {value}. "
                f"Clamp it or use a positive value."
            )
        return value
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(
            f"{owner}: {name} must be a number or a float tensor, got "
            f"{type(value).__name__} {value!r}."
        )
    if not (math.isfinite(value) and value > 0):
        raise ValueError(f"{owner}: {name} must be a finite number > 0, got {value!r}.")
    return float(value)


def check_fraction(owner: str, name: str, value: Scalar) -> Union[float, torch.Tensor]:
    """Validate a probability in [0, 1] (once, at construction)."""
    if isinstance(value, torch.Tensor):
        if value.is_complex() or not value.is_floating_point():
            raise TypeError(f"{owner}: {name} must be a float tensor, got dtype {value.dtype}.")
        if not bool(((value >= 0) & (value <= 1)).all()):
            raise ValueError(f"{owner}: {name} must lie in [0, 1] everywhere, got {value}.")
        return value
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(
            f"{owner}: {name} must be a number or a float tensor, got {type(value).__name__}."
        )
    if not 0.0 <= value <= 1.0:
        raise ValueError(f"{owner}: {name} must lie in [0, 1], got {value!r}.")
    return float(value)


_INT = (torch.int8, torch.int16, torch.int32, torch.int64, torch.uint8)


def safe_log(value: float) -> float:
    """``math.log`` that returns nan/-inf outside the domain, as ``torch.log`` does."""
    if value > 0:
        return math.log(value)
    return -math.inf if value == 0 else math.nan
