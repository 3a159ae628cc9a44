"""Exceptions raised by lossfn."""

from __future__ import annotations

__all__ = ["ShapeError"]


class ShapeError(ValueError):
    """Two tensors that must agree in shape do not.

    Raised instead of broadcasting silently: ``torch.nn.functional.mse_loss``
    only warns when ``pred`` is ``(n, 1)`` and ``target`` is ``(n,)``, and then
    returns the mean over an ``(n, n)`` matrix of wrong pairings.
    """
