r"""Batched least squares with QR-class accuracy from Gram matrices.

Plain normal equations square the condition number (``κ²·eps``: about 7 digits
on Longley, nothing on Filip). This solver works on Gram matrices of the whole
batch (``bmm``, no per-matrix loop, vmap-able) and still reaches the accuracy
of a QR factorization:

1. Scale the centred columns to unit norm: ``A = X·S``.
2. Shifted Cholesky ``R₀ᵀR₀ = AᵀA + s·I`` with the shift
   ``s = 11(md + d(d+1))·eps·d`` of shifted CholeskyQR (Fukaya et al. 2020), so
   the factorization exists even when ``κ(A)`` is near ``1/eps``.
3. ``Q₁ = X·T`` with ``T = S·R₀⁻¹`` is far better conditioned than ``A``; its
   Gram matrix ``G₁ = Q₁ᵀQ₁`` is formed from the data again, not from ``AᵀA``,
   and ``L₁L₁ᵀ = G₁``. This is the second pass of CholeskyQR2:
   ``X = Q·R`` with ``R = L₁ᵀR₀S⁻¹``.
4. ``β = T·γ`` with ``γ = G₁⁻¹·Q₁ᵀb``, and the sum of squares from the
   residual ``b − Q₁γ`` itself (``‖b‖² − γᵀQ₁ᵀb`` would cancel when ``r² ≈ 1``
   and cannot see an exact fit such as Wampler1).

The response rides along as the last row of ``[X b]ᵀ`` (..., d+1, m), so three
``bmm`` calls over the data give ``XᵀX``, ``Xᵀb``, ``bᵀb``, ``Q₁ᵀQ₁``, ``Q₁ᵀb``,
and a fourth the residuals. Iterative refinement on top
(``β ← β + T G₁⁻¹ Tᵀ Xᵀ(b − Xβ)``) was tried and left out: with a
working-precision residual it changed no NIST LRE by more than its own noise.

Rank deficiency is decided on the scaled design: the smallest singular value of
``A`` is bounded below by ``1/‖R⁻¹‖_F`` (``R = L₁ᵀR₀``), and a design whose bound
falls under ``eps·(max(n, d)·√d + 10·√(Σ_j 1 + (x̄_j/rms_j)²))`` (numpy's
``matrix_rank`` rule plus the rounding noise that column offsets leave after
centring), or whose Cholesky factorizations break down, is reported as rank
deficient: never truncated silently.

References:
    Fukaya, Kannan, Nakatsukasa, Zhang, Yamamoto (2020), "Shifted Cholesky QR for
    computing the QR factorization of ill-conditioned matrices", SIAM J. Sci.
    Comput. 42(1). Björck (1996), *Numerical Methods for Least Squares Problems*,
    §2.9 (iterative refinement).
"""

from __future__ import annotations

from typing import NamedTuple, Optional

import torch

from ._design import noise_floor

__all__ = ["Solution", "solve_centred"]


class Solution(NamedTuple):
    coef: torch.Tensor  # (..., d)
    ssr: torch.Tensor  # (...,) Σ r²
    total: torch.Tensor  # (...,) ‖b‖² (after the centring correction)
    cov_factor: torch.Tensor  # (..., d, d) C with (XᵀX)⁻¹ = C·Cᵀ
    full_rank: torch.Tensor  # (...,) bool


def _gram(a: torch.Tensor, offset: Optional[torch.Tensor], n: torch.Tensor) -> torch.Tensor:
    """Gram matrix of the rows of ``a − offset·1ᵀ`` (a is (..., k, m)): ``aaᵀ − n·offset·offsetᵀ``.

    ``offset`` is the tiny row mean left after a one-pass centring, so the
    rank-one correction is far below the rounding error of ``aaᵀ`` itself.
    """
    gram = a @ a.mT
    if offset is None:
        return gram
    return gram - n[..., None, None] * offset.unsqueeze(-1) * offset.unsqueeze(-2)


def solve_centred(
    aug: torch.Tensor,
    offset: Optional[torch.Tensor],
    n: torch.Tensor,
    means: torch.Tensor,
) -> Solution:
    """Least squares ``min ‖b − Xβ‖`` for the augmented data ``aug = [X b]ᵀ`` (..., d+1, m).

    The data the problem is posed on are ``aug − offset·1ᵀ`` (``offset`` (..., d+1)
    or None for 0): the centring correction is applied in the small (d+1)²
    algebra instead of another pass over the data. Absent rows must be 0.
    ``means`` (..., d) are the column means the centring removed (0 without
    an intercept): they set the rounding noise of each centred column. Columns
    at that noise level count as zero, which makes the design rank deficient.
    """
    d, m = aug.shape[-2] - 1, aug.shape[-1]
    eps = torch.finfo(aug.dtype).eps
    eye = torch.eye(d, dtype=aug.dtype, device=aug.device)

    gram = _gram(aug, offset, n)
    norms = torch.diagonal(gram[..., :d, :d], dim1=-2, dim2=-1).sqrt()
    live = norms > noise_floor(means, n.unsqueeze(-1))
    scale = torch.where(live, 1 / norms, 0.0)
    gram_scaled = scale.unsqueeze(-1) * gram[..., :d, :d] * scale.unsqueeze(-2)
    shift = 11 * (m * d + d * (d + 1)) * eps * d
    r0, info0 = torch.linalg.cholesky_ex(gram_scaled + shift * eye, upper=True)
    r0_inv = torch.linalg.solve_triangular(r0, eye.expand_as(r0), upper=True)
    t = scale.unsqueeze(-1) * r0_inv  # S·R₀⁻¹

    # [Q₁ b]ᵀ = diag(T, 1)ᵀ·[X b]ᵀ: one more pass gives Q₁ᵀQ₁ and Q₁ᵀb.
    t_aug = torch.nn.functional.pad(t, (0, 1, 0, 1))
    t_aug[..., d, d] = 1
    q_aug = t_aug.mT @ aug
    q_offset = None if offset is None else (offset.unsqueeze(-2) @ t_aug).squeeze(-2)
    gram1 = _gram(q_aug, q_offset, n)
    l1, info1 = torch.linalg.cholesky_ex(gram1[..., :d, :d])
    gamma = torch.cholesky_solve(gram1[..., :d, d:], l1)  # Xβ = Q₁γ
    coef = t @ gamma

    # The sum of squares from the residuals b − Q₁γ themselves: ‖b‖² − γᵀQ₁ᵀb
    # would cancel when r² ≈ 1 and cannot see an exact fit (Wampler1). Q₁ is
    # well conditioned, so this loses no more than b − Xβ would.
    weights = torch.cat([-gamma, torch.ones_like(gamma[..., :1, :])], dim=-2)
    residual = (weights.mT @ q_aug).squeeze(-2)
    ssr = torch.linalg.vecdot(residual, residual)
    if q_offset is not None:
        mean_residual = (q_offset.unsqueeze(-2) @ weights).squeeze(-1).squeeze(-1)
        ssr = ssr - n * mean_residual * mean_residual
    ssr = ssr.clamp(min=0)  # an exact fit may round to -0.0…1e-30

    # (XᵀX)⁻¹ = (T L₁⁻ᵀ)(T L₁⁻ᵀ)ᵀ; on the scaled design the factor is R₀⁻¹ L₁⁻ᵀ.
    l1_inv_t = torch.linalg.solve_triangular(l1, t.mT, upper=False)  # L₁⁻¹Tᵀ
    scaled_factor = torch.linalg.solve_triangular(l1, r0_inv.mT, upper=False)
    sigma_min_bound = 1 / torch.linalg.matrix_norm(scaled_factor)
    # Two noise sources bound what can be told from 0: the algorithm's own
    # rounding, eps·max(n, d)·√d (numpy's matrix_rank rule with ‖A‖_F = √d),
    # and the data's: entries known to eps relative leave, after centring and
    # scaling, a perturbation of Frobenius norm eps·√(Σ_j 1 + (x̄_j/rms_j)²).
    offset_ratio = torch.where(live, means.abs() * n.unsqueeze(-1).sqrt() * scale, 0.0)
    data_noise = (1 + offset_ratio.square()).sum(-1).sqrt()
    tol = eps * (torch.clamp(n, min=d) * d**0.5 + 10 * data_noise)
    full_rank = (info0 == 0) & (info1 == 0) & live.all(-1) & (sigma_min_bound > tol)
    return Solution(coef.squeeze(-1), ssr, gram[..., d, d], l1_inv_t.mT, full_rank)
