"""Batched products and weighted least-squares steps for the iterative robust fits.

The design is kept in both layouts, ``X`` ``(..., m, p)`` and ``Xt`` ``(..., p, m)``
(contiguous): with few columns, batched products run several times faster
when the long axis ``m`` is the contiguous one of the operand being reduced.
"""

from __future__ import annotations

from typing import Optional, Tuple

import torch

from ._design import packed_symmetric_index


def fitted(Xt: torch.Tensor, beta: torch.Tensor) -> torch.Tensor:
    """``X β`` per dataset: ``(..., p, m), (..., p) -> (..., m)``."""
    p = Xt.shape[-2]
    if p > 4:
        return (beta.unsqueeze(-2) @ Xt).squeeze(-2)
    # A few scaled rows summed run ~3x faster than a batch of 1×p×m matmuls.
    out = Xt[..., 0, :] * beta[..., :1]
    for k in range(1, p):
        out += Xt[..., k, :] * beta[..., k : k + 1]
    return out


def project(X: torch.Tensor, values: torch.Tensor) -> torch.Tensor:
    """``Xᵀ v`` per dataset: ``(..., m, p), (..., m) -> (..., p)``."""
    return (values.unsqueeze(-2) @ X).squeeze(-2)


def weighted_gram(X: torch.Tensor, Xt: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """``Xᵀ W X`` per dataset: ``(..., m) weights -> (..., p, p)``."""
    return (Xt * weight.unsqueeze(-2)) @ X


def column_products(X: torch.Tensor, *, unit_first: bool = False) -> Optional[torch.Tensor]:
    """The distinct products ``xᵢⱼ·xᵢₖ`` (``j ≤ k``) and the ``xᵢⱼ`` themselves, per point.

    Against these columns one product gives ``Xᵀ diag(v) X`` and ``Xᵀ v`` for
    several weight rows ``v`` at once (see :func:`weighted_grams`).

    For ``p = 2`` they are laid out feature-major, ``(..., q, m)``: ``x₀², x₀x₁,
    x₁², x₀, x₁`` (``q = 5``), or with ``unit_first`` (the first column is the
    intercept's 0/1 weight, so ``x₀² = x₀`` and ``x₀x₁ = x₁`` exactly) just
    ``x₀, x₁, x₁²`` (``q = 3``). For ``p = 3, 4`` they are ``(..., m, q)``,
    ``[xᵢⱼ·xᵢₖ for j ≤ k] ++ xᵢ``. Each layout is the faster one for its size
    (measured on one 256-dataset block, m = 200). None for ``p > 4``: there the
    products outgrow the cache and the weighted copies of ``Xᵀ`` are faster.
    """
    p = X.shape[-1]
    if p > 4:
        return None
    if p == 2:
        x0, x1 = X[..., 0], X[..., 1]
        columns = [x0, x1, x1 * x1] if unit_first else [x0 * x0, x0 * x1, x1 * x1, x0, x1]
        return torch.stack(columns, dim=-2)
    return torch.cat([X[..., j : j + 1] * X[..., j:] for j in range(p)] + [X], dim=-1)


def weighted_grams(
    X: torch.Tensor, Xt: torch.Tensor, products: Optional[torch.Tensor], rows: torch.Tensor
) -> Tuple[torch.Tensor, torch.Tensor]:
    """Gram matrices for all but the last weight row, and ``Xᵀ v`` for the last.

    ``rows`` ``(..., k, m)``; ``products`` from :func:`column_products`, for
    ``p ≠ 2`` (:func:`weighted_solves` handles ``p = 2`` on its own).
    Returns ``Xᵀ diag(vᵢ) X`` ``(..., k − 1, p, p)`` for the first ``k − 1``
    rows and ``Xᵀ v_k`` ``(..., 1, p)``.
    """
    p = X.shape[-1]
    if products is None:
        weighted = (Xt.unsqueeze(-3) * rows[..., :-1, :].unsqueeze(-2)).flatten(-3, -2)
        # Xᵀ (weighted)ᵀ is each Gram matrix transposed, i.e. itself; this
        # order of the operands runs ~1.5x faster than weighted @ X.
        grams = (Xt @ weighted.mT).mT.unflatten(-2, (-1, p))
        return grams, rows[..., -1:, :] @ X
    sums = rows @ products  # (..., k, q): one batched product over the data
    # The sums of x_j·x_k (j ≤ k) come packed in triu order: mirror them.
    grams = sums[..., :-1, packed_symmetric_index(p)].unflatten(-1, (p, p))
    return grams, sums[..., -1:, -p:]


def weighted_solves(
    X: torch.Tensor, Xt: torch.Tensor, products: Optional[torch.Tensor], rows: torch.Tensor
) -> torch.Tensor:
    """Solve ``(Xᵀ diag(vₖ) X) zₖ = Xᵀ u`` for every weight row ``vₖ`` but the last, ``u``.

    ``rows`` ``(..., k, m)``: ``k − 1`` rows of weights ``≥ 0``, then ``u``;
    ``products`` from :func:`column_products`. Returns ``z`` ``(..., k − 1, p)``,
    0 where the Gram matrix is not numerically positive definite, as
    :func:`solve_spd`. For ``p = 2`` the adjugate works on the sums of one
    batched product directly (no Gram matrices laid out, a dozen torch calls
    fewer). With weights ``≥ 0``, ``g₀₀ ≥ 0`` holds exactly, so ``det G > 0``
    alone is the positive-definiteness test.
    """
    if X.shape[-1] != 2 or products is None:
        grams, rhs = weighted_grams(X, Xt, products, rows)
        return solve_spd(grams, rhs.expand_as(grams[..., 0]))
    # (..., k, q): Σv·x₀², Σv·x₀x₁, Σv·x₁², then Σv·x₀, Σv·x₁ (q = 5), or
    # Σv·x₀ = Σv·x₀², Σv·x₁ = Σv·x₀x₁, Σv·x₁² (q = 3, unit first column).
    sums = (products @ rows.mT).mT
    g = sums[..., :-1, :3]  # (..., k − 1, 3): g₀₀, g₀₁, g₁₁
    # (..., 1, 2): b₀, b₁
    b = sums[..., -1:, :2] if products.shape[-2] == 3 else sums[..., -1:, 3:]
    flipped = g.flip(-1)  # g₁₁, g₀₁, g₀₀
    # −adj(G) b = (g₀₁b₁ − g₁₁b₀, g₀₁b₀ − g₀₀b₁) and −det G = g₀₁² − g₀₀g₁₁
    # (..., k − 1, 1): negating both is exact and leaves the ratio as is.
    minus_adjugate = g[..., 1:2] * b.flip(-1) - flipped[..., ::2] * b
    minus_det = torch.diff(g[..., :2] * flipped[..., :2], dim=-1)
    good = minus_det < 0
    return minus_adjugate * (torch.where(good, minus_det, 1.0).reciprocal() * good)


def solve_spd(gram: torch.Tensor, rhs: torch.Tensor) -> torch.Tensor:
    """Solve ``G z = b`` for symmetric positive definite ``G`` ``(..., p, p)``.

    A dataset whose ``G`` is not numerically positive definite (rank-deficient
    or all weights zero) gets ``z = 0`` instead of an exception, so one bad
    dataset cannot stop a batch; callers flag such datasets themselves.
    For ``p = 2`` the adjugate formula replaces the factorization (half the
    time on small batched matrices; the same positive-definiteness test:
    ``g₀₀ > 0`` and ``det G > 0``).
    """
    if gram.shape[-1] == 2:
        g00, g01, g11 = gram[..., 0, 0], gram[..., 0, 1], gram[..., 1, 1]
        det = g00 * g11 - g01 * g01
        good = (g00 > 0) & (det > 0)
        scale = torch.where(good, 1 / torch.where(good, det, 1.0), 0.0)
        b0, b1 = rhs[..., 0], rhs[..., 1]
        return torch.stack([(g11 * b0 - g01 * b1) * scale, (g00 * b1 - g01 * b0) * scale], dim=-1)
    factor, info = torch.linalg.cholesky_ex(gram)
    good = (info == 0).unsqueeze(-1)
    eye = torch.eye(gram.shape[-1], dtype=gram.dtype, device=gram.device)
    factor = torch.where(good.unsqueeze(-1), factor, eye)
    z = torch.cholesky_solve(rhs.unsqueeze(-1), factor).squeeze(-1)
    return torch.where(good, z, 0.0)


def wls_step(
    X: torch.Tensor, Xt: torch.Tensor, y: torch.Tensor, weight: torch.Tensor, beta: torch.Tensor
) -> torch.Tensor:
    """One weighted least-squares solve, written as a correction of ``beta``.

    Returns ``β + (XᵀWX)⁻¹ XᵀW (y − Xβ)``, the minimizer of ``Σ wᵢ (yᵢ − xᵢᵀb)²``.
    In correction form the normal equations' loss of digits shrinks with the
    residual of ``β``: repeated steps act as iterative refinement.
    """
    r = y - fitted(Xt, beta)
    return beta + solve_spd(weighted_gram(X, Xt, weight), project(X, weight * r))
