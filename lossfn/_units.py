"""Exact power-of-two units: data scaled by them round exactly as before.

float32 squares overflow above about 1e19 and underflow below about 1e-19, well
inside the range of the data (SI units put masses at 1e-27 kg); sums of n values
overflow near max/n. Fits and estimators bring such data to a unit of about
their size first: multiplying by a power of two changes no bit of a normal
number's mantissa, so every later rounding is the one the unscaled arithmetic
would make, minus the over- and underflows.
"""

from __future__ import annotations

import math

import torch

__all__ = ["power_of_two_scale", "largest_abs"]


def power_of_two_scale(size: torch.Tensor) -> torch.Tensor:
    """The power of two ``2^−e`` that brings ``size`` ``(...)`` into ``[½, 1)``; float32 or float64.

    ``e`` is clamped so that the scale stays a normal number; a size of 0 or not
    finite gets 1. No gradient flows through it.

    Example:
        >>> import torch
        >>> power_of_two_scale(torch.tensor([3.0, 1e-30, 0.0]))
        tensor([2.5000e-01, 6.3383e+29, 1.0000e+00])
    """
    if size.dtype not in (torch.float32, torch.float64):
        raise TypeError(f"power_of_two_scale: float32 or float64, got {size.dtype}")
    bound = int(math.log2(torch.finfo(size.dtype).max)) - 1  # 126 (float32), 1022 (float64)
    e = torch.frexp(size.detach())[1].clamp(-bound, bound)
    # 2^−e from its bits: exact on every device (pow and exp2 need not be).
    bits, mantissa = (torch.int32, 23) if size.dtype == torch.float32 else (torch.int64, 52)
    return ((bound + 1 - e.to(bits)) << mantissa).view(size.dtype)


def largest_abs(v: torch.Tensor, dim: int) -> torch.Tensor:
    """``max|v|`` along ``dim``; 0 where ``dim`` is empty (``amax`` has no identity there and raises).

    Example:
        >>> import torch
        >>> largest_abs(torch.tensor([[1.0, -3.0], [0.5, 2.0]]), -1)
        tensor([3., 2.])
    """
    return v.abs().amax(dim) if v.shape[dim] else v.abs().sum(dim)  # a rule on the shape
