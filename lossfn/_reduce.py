"""Reductions shared by every loss: ``"mean"``, ``"sum"``, ``"none"``, weighted or not."""

from __future__ import annotations

from typing import Optional

import torch

__all__ = ["reduce"]


def reduce(
    per_element: torch.Tensor, reduction: str, weight: Optional[torch.Tensor] = None
) -> torch.Tensor:
    """Reduce a per-element loss ``ℓ``.

    ``"none"`` returns ``w·ℓ`` (or ``ℓ``), ``"sum"`` returns ``Σ w·ℓ`` and ``"mean"``
    returns ``Σ w·ℓ / Σ w`` (or the plain mean). An empty input gives 0 for
    ``"sum"`` and nan for ``"mean"``, as torch does. ``reduction`` must already be
    validated (``_checks.check_reduction``).
    """
    if weight is not None:
        weighted = per_element * weight
        if reduction == "none":
            return weighted
        total = weighted.sum()
        if reduction == "sum":
            return total
        return total / weight.expand_as(per_element).sum()
    if reduction == "none":
        return per_element
    if reduction == "sum":
        return per_element.sum()
    return per_element.mean()
