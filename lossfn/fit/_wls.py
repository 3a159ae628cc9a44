"""Batched weighted least-squares steps for the iterative robust fits."""

from __future__ import annotations

import torch


def weighted_gram(design: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """``Xᵀ W X`` per dataset: ``(..., m, p), (..., m) -> (..., p, p)``."""
    return (design * weight.unsqueeze(-1)).transpose(-1, -2) @ design


def solve_spd(gram: torch.Tensor, rhs: torch.Tensor) -> torch.Tensor:
    """Solve ``G z = b`` for symmetric positive definite ``G`` ``(..., p, p)``.

    A dataset whose ``G`` is not numerically positive definite (rank-deficient
    or all weights zero) gets ``z = 0`` instead of an exception, so one bad
    dataset cannot stop a batch; callers flag such datasets themselves.
    """
    factor, info = torch.linalg.cholesky_ex(gram)
    good = (info == 0).unsqueeze(-1)
    eye = torch.eye(gram.shape[-1], dtype=gram.dtype, device=gram.device)
    factor = torch.where(good.unsqueeze(-1), factor, eye)
    z = torch.cholesky_solve(rhs.unsqueeze(-1), factor).squeeze(-1)
    return torch.where(good, z, 0.0)


def wls_step(
    design: torch.Tensor, response: torch.Tensor, weight: torch.Tensor, beta: torch.Tensor
) -> torch.Tensor:
    """One weighted least-squares solve, written as a correction of ``beta``.

    Returns ``β + (XᵀWX)⁻¹ XᵀW (y − Xβ)``, the minimizer of ``Σ wᵢ (yᵢ − xᵢᵀb)²``.
    In correction form the normal equations' loss of digits shrinks with the
    residual of ``β``: repeated steps act as iterative refinement.
    """
    r = response - (design @ beta.unsqueeze(-1)).squeeze(-1)
    rhs = ((weight * r).unsqueeze(-2) @ design).squeeze(-2)
    return beta + solve_spd(weighted_gram(design, weight), rhs)
