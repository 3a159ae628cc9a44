"""What the native kernels' callers share: which calls they may serve, and views of the data."""

from __future__ import annotations

import os
from typing import Optional

import torch

__all__ = ["enabled", "eligible", "rows", "CPU64"]

#: Arguments the kernels write: float64 on the CPU, whatever the default device is.
CPU64 = {"dtype": torch.float64, "device": "cpu"}


def enabled() -> bool:
    """False where the environment variable ``LOSSFN_NATIVE`` is ``0``."""
    return os.environ.get("LOSSFN_NATIVE", "1") != "0"


def _plain(t: Optional[torch.Tensor]) -> bool:
    """A CPU tensor whose memory the kernels may read: no subclass, wrapper or view bit."""
    return t is None or (
        type(t) is torch.Tensor
        and t.device.type == "cpu"
        and t.layout == torch.strided
        and not torch._C._functorch.is_functorch_wrapped_tensor(t)
        and not t.is_neg()
        and not t._is_zerotensor()  # no memory behind it
    )


def rows(t: Optional[torch.Tensor], m: int) -> Optional[torch.Tensor]:
    """``t`` as (rows, m) with contiguous points, as a view; None if it is none."""
    if t.dim() == 2:  # as it is: a view op costs tens of µs with cold caches
        flat = t
    else:
        try:
            flat = t.view(-1, m)
        except RuntimeError:
            return None
    return flat if m <= 1 or flat.stride(1) == 1 else None


def eligible(*tensors: Optional[torch.Tensor]) -> bool:
    """True if the kernels may serve a call on these tensors (see :mod:`lossfn._native`)."""
    if not enabled() or torch._C._are_functorch_transforms_active():
        return False
    if torch.compiler.is_compiling() or torch.jit.is_tracing():
        return False
    if torch.autograd.forward_ad._current_level >= 0:  # inside fwAD.dual_level(): tangents
        return False
    if torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in tensors):
        return False
    return all(_plain(t) for t in tensors)
