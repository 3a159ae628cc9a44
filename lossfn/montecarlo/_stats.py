r"""Mergeable central co-moments and the Monte Carlo standard errors derived from them.

A study's state is, per block of replicates, the count ``n``, the mean of each
estimator's error and the central co-moments

.. math:: S_{pq}[k, l] = \sum_i (e_{ik} - \bar e_k)^p\,(e_{il} - \bar e_l)^q,
          \qquad p, q \in \{0, 1, 2\},

for every pair of estimators ``k, l``. The diagonal ``k = l`` holds the second,
third and fourth central moments of each estimator; ``S_22[k, l]`` is what the
standard error of a ratio of two variances needs. Two states merge exactly by
moving both to the pooled mean with the binomial theorem and adding
(Chan, Golub & LeVeque 1979 for ``p + q = 2``; Pébay 2008 for higher orders),
so no raw power sums of large numbers are ever formed.

On the CPU, reductions here run over the last, contiguous dimension with at least
two outputs or fewer than 32 768 elements, so each sum is computed by one thread
in a fixed order: the bits do not depend on the number of threads. On an
accelerator a reduction kernel's order depends on the whole tensor's shape (how
many blocks share the call, that is the chunk size), so the sums there are taken
by :func:`fixed_order_sum`, pairwise in halves, whose order depends on a
block's length alone.

References:
    T. F. Chan, G. H. Golub, R. J. LeVeque, "Updating formulae and a pairwise
    algorithm for computing sample variances", Stanford CS report 79-773, 1979.
    P. Pébay, "Formulas for robust, one-pass parallel computation of covariances and
    arbitrary-order statistical moments", Sandia report SAND2008-6212, 2008.
"""

from __future__ import annotations

import functools
from typing import NamedTuple, Optional

import torch

__all__ = ["Moments", "block_moments", "merge", "fold", "pack", "unpack", "fixed_order_sum"]

# W[p, i] = C(p, i) d^(p - i) for i <= p: row p expands (u + d)^p.
_BINOMIAL = ((1.0, 0.0, 0.0), (1.0, 1.0, 0.0), (1.0, 2.0, 1.0))
_POWER = ((0, 0, 0), (1, 0, 0), (2, 1, 0))


class Moments(NamedTuple):
    """Mergeable statistics of ``K`` estimators' errors over ``count`` replicates.

    ``count`` has shape ``(...)``, ``mean`` ``(..., K)``, ``comoments``
    ``(..., 3, 3, K, K)``; the leading dims index blocks (or nothing).
    """

    count: torch.Tensor
    mean: torch.Tensor
    comoments: torch.Tensor


@functools.lru_cache(maxsize=32)
def _monomials(k: int, device: torch.device) -> tuple:
    """How to compute each distinct entry of the ``(3, 3, K, K)`` co-moments from ``[1, u, u²]``.

    ``S[p, q, k, l] = S[q, p, l, k]``, so only index pairs ``(p·K + k) <= (q·K + l)``
    are distinct. Of those, ``1·1`` is the count, ``1·v`` is the plain sum of ``v``
    (multiplying by one is exact), and ``u_k·u_k`` is the row ``u_k²`` itself: only
    the rest need a product. Returns ``(products, where)``: ``products`` lists the
    pairs of rows of ``[u, u²]`` (``2K`` rows) to multiply; ``where`` maps every
    entry of the co-moments to a row of ``[count, sums of u, u², products]``.
    """
    row = torch.tensor([[p * k + i for i in range(k)] for p in range(3)])  # (3[p], K)
    first = row[:, None, :, None].expand(3, 3, k, k)
    second = row[None, :, None, :].expand(3, 3, k, k)
    low, high = torch.minimum(first, second), torch.maximum(first, second)
    pairs, where = torch.unique(low * 3 * k + high, return_inverse=True)
    products, source = [], []
    for pair in pairs.tolist():
        a, b = divmod(pair, 3 * k)  # rows of [1, u, u²]; a <= b
        if b < k:  # 1·1
            source.append(0)
        elif a < k:  # 1·v: the sum of row v
            source.append(1 + b - k)
        elif a == b and a < 2 * k:  # u_k·u_k is u_k², computed the same way
            source.append(1 + a)
        else:
            products.append((a - k, b - k))
            source.append(1 + 2 * k + len(products) - 1)
    return products, torch.tensor(source)[where].to(device)


def fixed_order_sum(x: torch.Tensor, pairwise: Optional[bool] = None) -> torch.Tensor:
    """``x.sum(-1)`` in an order fixed by ``x.shape[-1]`` alone, on any device.

    ``pairwise`` (default: off the CPU) pads the last dim with zeros to a power
    of two and adds its halves until one value is left: each step is an
    elementwise add, whose bits cannot depend on how many rows share the call,
    as a CUDA reduction kernel's do (seen on an H100: blocks summed 1 or 6 at a
    time differed in the last bit). Otherwise ``x.sum(-1)``.

    Example:
        >>> import torch
        >>> fixed_order_sum(torch.tensor([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]]), pairwise=True)
        tensor([ 6., 15.])
    """
    if pairwise is None:
        pairwise = x.device.type != "cpu"
    if not pairwise:
        return x.sum(-1)
    n = x.shape[-1]
    size = 1 << max(n - 1, 0).bit_length()
    if size != n:
        x = torch.nn.functional.pad(x, (0, size - n))
    while x.shape[-1] > 1:
        half = x.shape[-1] // 2
        x = x[..., :half] + x[..., half:]
    return x[..., 0]


def block_moments(errors: torch.Tensor) -> Moments:
    """Statistics of ``G`` blocks of ``n`` replicates: ``errors`` of shape ``(K, G, n)``, float64.

    Returns :class:`Moments` with a leading block dim ``G``. The mean is computed
    in two passes (the second sums the residuals of the first), the co-moments
    from the centred values, each distinct one once. Every sum runs over the last
    dim of one block, so a block's bits do not depend on how many blocks share
    the call.
    """
    k, g, n = errors.shape
    # [u, u²] in one buffer written in place: with fresh temporaries for each
    # step this function was measured several times slower (allocation, page faults).
    powers = errors.new_empty((2 * k, g, n))
    u = powers[:k]
    first = fixed_order_sum(errors) / n  # (K, G)
    mean = first + fixed_order_sum(torch.sub(errors, first.unsqueeze(-1), out=u)) / n
    torch.sub(errors, mean.unsqueeze(-1), out=u)
    torch.mul(u, u, out=powers[k:])
    products, where = _monomials(k, errors.device)
    count = errors.new_full((g,), float(n))
    # One product at a time, in one reused buffer: a (T, G, n) tensor of them would
    # be the largest buffer of a study.
    product = errors.new_empty((g, n))
    sums = torch.cat([count.unsqueeze(0), fixed_order_sum(powers)]
                     + [fixed_order_sum(torch.mul(powers[a], powers[b], out=product)).unsqueeze(0)
                        for a, b in products])
    return Moments(count, mean.T, sums[where].movedim(-1, 0))


def _shift(comoments: torch.Tensor, d: torch.Tensor) -> torch.Tensor:
    """Co-moments about a point moved by ``-d``: ``Σ (u + d_k)^p (v + d_l)^q``."""
    binomial = d.new_tensor(_BINOMIAL)
    power = torch.tensor(_POWER, device=d.device)
    d_powers = torch.stack([torch.ones_like(d), d, d * d], dim=-1)  # (..., K, 3)
    w = (binomial * d_powers[..., power]).movedim(-3, -2)  # (..., 3[p], K, 3[i])
    w_row = w[..., :, None, :, None, :, None]  # (..., p, 1, k, 1, i, 1)
    w_col = w[..., None, :, None, :, None, :]  # (..., 1, q, 1, l, 1, j)
    s = comoments.movedim((-4, -3), (-2, -1))[..., None, None, :, :, :, :]  # (..., 1, 1, k, l, i, j)
    terms = (w_row * w_col) * s  # (..., p, q, k, l, i, j)
    return terms.flatten(-2).sum(-1)


def merge(a: Moments, b: Moments) -> Moments:
    """Exact statistics of the union of two disjoint sets of replicates (batched)."""
    n = a.count + b.count
    delta = b.mean - a.mean
    share_b = (b.count / n).unsqueeze(-1)
    share_a = (a.count / n).unsqueeze(-1)
    mean = a.mean + delta * share_b
    comoments = _shift(a.comoments, -delta * share_b) + _shift(b.comoments, delta * share_a)
    return Moments(n, mean, comoments)


def fold(blocks: Moments) -> Moments:
    """Merge a stack of ``G`` block statistics (leading dim) pairwise, in a fixed tree.

    Level by level, block ``2i`` merges with ``2i + 1`` (an odd one out is
    carried); the tree depends only on ``G``, so the result does not depend on
    how the blocks were computed, chunked or distributed.
    """
    while blocks.count.shape[0] > 1:
        g = blocks.count.shape[0]
        even = Moments(*(t[0 : g - 1 : 2] for t in blocks))
        odd = Moments(*(t[1:g:2] for t in blocks))
        merged = merge(even, odd)
        if g % 2:
            merged = Moments(*(torch.cat([m, t[-1:]]) for m, t in zip(merged, blocks)))
        blocks = merged
    return Moments(*(t[0] for t in blocks))


def pack(moments: Moments) -> torch.Tensor:
    """Blocks ``(G, ...)`` as flat float64 rows ``[n, mean (K), comoments (9K²)]``, ``(G, L)``."""
    return torch.cat([moments.count.unsqueeze(-1), moments.mean, moments.comoments.flatten(1)],
                     dim=-1)


def unpack(rows: torch.Tensor, k: int) -> Moments:
    """Inverse of :func:`pack` for a stack of rows ``(G, 1 + K + 9K²)``."""
    return Moments(rows[:, 0], rows[:, 1 : 1 + k], rows[:, 1 + k :].reshape(-1, 3, 3, k, k))


class Summary(NamedTuple):
    """Per-estimator statistics of the errors ``e = estimate − truth``, shape ``(K,)``."""

    bias: torch.Tensor
    bias_se: torch.Tensor
    variance: torch.Tensor
    variance_se: torch.Tensor
    mse: torch.Tensor
    mse_se: torch.Tensor
    efficiency: torch.Tensor
    efficiency_se: torch.Tensor


def summarize(moments: Moments, reference: int) -> Summary:
    r"""Bias, variance, MSE and efficiency with their Monte Carlo standard errors.

    With ``m_r = S_r/n`` the central moments of an estimator's error over the
    ``n`` replicates and ``d`` its mean (the bias):

    - ``se(bias) = sqrt(s²/n)``, ``s² = S_2/(n − 1)``;
    - ``se(s²) = sqrt((m_4 − m_2²·(n − 3)/(n − 1))/n)``;
    - ``mse = m_2 + d²``, ``se(mse) = sqrt((m_4 − m_2² + 4d·m_3 + 4d²·m_2)/n)``
      (the variance of ``e²``);
    - ``efficiency = s²_ref/s²``; by the delta method, with
      ``c = S_22[ref, k]/n − m_2,ref·m_2,k`` the covariance of the squared deviations,
      ``se = eff·sqrt((V_ref/m_2,ref² + V_k/m_2,k² − 2c/(m_2,ref·m_2,k))/n)``,
      ``V = m_4 − m_2²``. It is 0 for the reference itself.
    """
    n = moments.count
    s = moments.comoments
    diag = torch.arange(s.shape[-1], device=s.device)
    m2 = s[2, 0, diag, diag] / n
    m3 = s[2, 1, diag, diag] / n
    m4 = s[2, 2, diag, diag] / n
    d = moments.mean
    variance = m2 * n / (n - 1)
    bias_se = (variance / n).sqrt()
    variance_se = ((m4 - m2 * m2 * (n - 3) / (n - 1)) / n).clamp(min=0).sqrt()
    mse = m2 + d * d
    mse_se = ((m4 - m2 * m2 + 4 * d * m3 + 4 * d * d * m2) / n).clamp(min=0).sqrt()
    ref_var = variance[reference]
    efficiency = ref_var / variance
    v = m4 - m2 * m2
    cross = s[2, 2, reference, :] / n - m2[reference] * m2
    rel = (v[reference] / m2[reference] ** 2 + v / (m2 * m2)
           - 2 * cross / (m2[reference] * m2)) / n
    efficiency_se = efficiency * rel.clamp(min=0).sqrt()
    return Summary(d, bias_se, variance, variance_se, mse, mse_se, efficiency, efficiency_se)
