r"""Order statistics of many short rows by comparator networks of min/max.

``torch.median(dim=-1)`` runs one selection per row; for many short rows (Monte
Carlo replicates, small datasets) its per-row cost dominates: about 34 ms for
100 000 rows of 25 float32 values on one CPU thread, ten times ``np.partition``.
A comparator network instead works on whole columns: each comparator
``(a, b) → (min(a, b), max(a, b))`` is one ``torch.minimum`` and one
``torch.maximum`` over all rows at once, so the cost is a fixed number of
vectorized elementwise ops that depends only on ``m``: 6 ms for the case above.

The network is Batcher's odd–even merge sort on the next power of two ``n ≥ m``,
with the ``n − m`` extra wires taken as ``+∞``: a comparator whose max wire holds
``+∞`` does nothing, and one whose min wire holds it only swaps, so both are
removed by relabelling the wires. It is then pruned backwards from the wanted
outputs, the middle one (odd ``m``) or two (even ``m``): a comparator none of
whose outputs is needed is dropped, one of whose outputs is needed computes only
that one. By the 0–1 principle (Knuth, TAOCP vol. 3, §5.3.4) the result is the
exact order statistic for every input; every value it returns is one of the
inputs, so it is bitwise the same as a sort's.

:func:`ranked` keeps the whole sorting network and gathers per-row ranks from
its sorted columns: the masked median, whose middle ranks depend on each row's
count of present points, takes it instead of ``torch.sort``.

nan: the wanted output depends on every input, so in the pruned network every
input has a path to it, and ``torch.minimum``/``torch.maximum`` propagate nan
along every path: a row with a nan gives nan from :func:`middle`, as
``torch.median`` does (:func:`ranked` leaves nan rows to its caller).

Everything is a pure function of the input; the networks are cached by ``m``
(plain index lists, a function of the shape only). It works under
``torch.func.vmap`` and ``grad``; at ties the gradient is split between the tied
values (``torch.minimum``'s rule) where ``torch.median`` gives it to one of them:
both are subgradients of the median.

References:
    K. E. Batcher, "Sorting networks and their applications", AFIPS Spring Joint
    Computer Conference, 1968.
    D. E. Knuth, The Art of Computer Programming, vol. 3, §5.3.4, 1998.
"""

from __future__ import annotations

import functools
import math
from typing import List, Optional, Tuple

import torch

__all__ = ["batcher_comparators", "selection_network", "middle", "ranked", "sort_values",
           "network_pays", "tile_rows",
           "by_tiles"]

#: Up to this many points per row the network was measured faster than
#: ``torch.median`` (1.6x at m = 128 with 10⁵ rows; its size grows as m·log²m).
MAX_POINTS = 128

#: Values per thread in one tile of rows (1 MiB of float32), at least two threads'
#: worth: tiles keep the network's working memory small next to the data's and in
#: cache, cost no speed from about 16 000 rows of 25 on (measured), and on four or
#: more threads each op spans more than torch's parallel grain (32 768 values).
#: On two threads each op of a tile runs on one: on a loaded machine the parallel
#: ops were measured several times slower.
TILE_ELEMENTS = 1 << 18


def tile_rows(m: int) -> int:
    """Rows of ``m`` values per tile."""
    return max(1, TILE_ELEMENTS * max(2, torch.get_num_threads()) // m)


Comparator = Tuple[int, int, bool, bool]


def batcher_comparators(n: int) -> List[Tuple[int, int]]:
    """Batcher's odd–even merge sort on ``n`` wires (a power of two), in order.

    Each pair ``(i, j)``, ``i < j``, puts the minimum on wire ``i`` and the
    maximum on wire ``j``.
    """
    pairs = []
    size = 1  # sorted runs of this length are merged into runs of twice it
    while size < n:
        gap = size
        while gap >= 1:
            for start in range(gap % size, n - gap, 2 * gap):
                for i in range(start, min(start + gap, n - gap)):
                    # Compare only within one run of length 2·size being merged.
                    if i // (2 * size) == (i + gap) // (2 * size):
                        pairs.append((i, i + gap))
            gap //= 2
        size *= 2
    return pairs


@functools.lru_cache(maxsize=None)
def selection_network(m: int, ranks: Tuple[int, ...]) -> Tuple[Tuple[Comparator, ...],
                                                                   Tuple[int, ...]]:
    """The comparators that put the order statistics ``ranks`` (0-based) of ``m`` values in place.

    Returns ``(comparators, wires)``: each comparator ``(a, b, low, high)`` replaces
    wire ``a`` by ``min(a, b)`` if ``low`` and wire ``b`` by ``max(a, b)`` if
    ``high`` (both from the values before the comparator); afterwards wire
    ``wires[k]`` holds the order statistic ``ranks[k]``.

    Example:
        >>> selection_network(3, (1,))   # the median of three: three comparators
        (((0, 1, True, True), (0, 2, False, True), (1, 2, True, False)), (1,))
    """
    n = 1 << max(m - 1, 0).bit_length()
    # position[p] is the input wire now at sorted position p, None for a +inf pad.
    position: List[Optional[int]] = list(range(m)) + [None] * (n - m)
    full = []
    for i, j in batcher_comparators(n):
        a, b = position[i], position[j]
        if b is None:  # max wire holds +inf: min(a, +inf) = a stays, no-op
            continue
        if a is None:  # min wire holds +inf: the values swap places
            position[i], position[j] = b, None
            continue
        full.append((a, b))
    wires = tuple(position[r] for r in ranks)
    needed = set(wires)
    kept = []
    for a, b in reversed(full):
        low, high = a in needed, b in needed
        if low or high:
            kept.append((a, b, low, high))
            needed.update((a, b))
    return tuple(reversed(kept)), wires


def network_pays(x: torch.Tensor) -> bool:
    """Whether :func:`middle` beats ``torch.median`` on ``x`` ``(..., m)`` (a rule on the shape).

    Each op of the network costs about a microsecond of dispatch, so it pays only
    on enough rows: measured on one CPU thread, from ``max(2048, 64·m)`` rows on it
    is 1.6–3x faster for ``2 ≤ m ≤ 128`` (and 5–7x on 10⁵ rows of ``m ≤ 32``); it
    loses above ``m ≈ 160``. The masked median applies the same rule to
    :func:`ranked` against ``torch.sort``: about even below ``m = 8`` at the
    threshold, 1.7–2.9x faster from ``m = 25`` on (the whole masked median).
    On CUDA, one ``torch.median`` kernel against hundreds of launches was not
    measured, so CUDA keeps ``torch.median``.
    """
    m = x.shape[-1]
    rows = x.numel() // max(m, 1)
    return x.device.type == "cpu" and 2 <= m <= MAX_POINTS and rows >= max(2048, 64 * m)


def middle(x: torch.Tensor) -> torch.Tensor:
    """Median over the last dim, ``(..., m) → (...)``; the mid-pair average for even ``m``.

    Every value counts; a row with a nan gives nan.

    Example:
        >>> import torch
        >>> middle(torch.tensor([[4.0, 1.0, 3.0, 2.0], [0.0, -1.0, 5.0, 5.0]]))
        tensor([2.5000, 2.5000])
    """
    m = x.shape[-1]
    if m == 1:
        return x[..., 0].clone()  # a new tensor, as on every other path
    comparators, wires = selection_network(m, tuple(sorted({(m - 1) // 2, m // 2})))

    def tile_median(tile: torch.Tensor) -> torch.Tensor:
        columns = _run(comparators, tile)
        lower, upper = columns[wires[0]], columns[wires[-1]]
        if m % 2:
            return lower
        return 0.5 * lower + 0.5 * upper  # halve first: the rounded midpoint, no overflow

    return by_tiles(tile_median, x)


def ranked(x: torch.Tensor, ranks: torch.Tensor) -> torch.Tensor:
    """The value of rank ``ranks`` (0-based, per row) in each row of ``x``, by a sorting network.

    The same as ``x.sort(dim=-1).values.gather(-1, ranks.unsqueeze(-1)).squeeze(-1)``
    for rows without nan (a row with a nan gives an unspecified value).

    Args:
        x: ``(..., m)``, ``m ≥ 1``.
        ranks: ``(..., k)`` integer ranks in ``[0, m)``: ``k`` of them per row.

    Returns:
        ``(..., k)``, the dtype of ``x``.

    Example:
        >>> import torch
        >>> x = torch.tensor([[4.0, 1.0, 3.0], [0.0, -1.0, 5.0]])
        >>> ranked(x, torch.tensor([[0, 2], [1, 1]]))
        tensor([[1., 4.],
                [0., 0.]])
    """
    k = ranks.shape[-1]

    comparators, wires = selection_network(x.shape[-1], tuple(range(x.shape[-1])))

    def tile_ranked(tile: torch.Tensor, tile_ranks: torch.Tensor) -> torch.Tensor:
        columns = _run(comparators, tile)
        ordered = torch.stack([columns[w] for w in wires])  # (m, n): sorted down each column
        return ordered.gather(0, tile_ranks.reshape(-1, k).T).T

    return by_tiles(tile_ranked, x, ranks).reshape(ranks.shape)


def sort_values(x: torch.Tensor) -> torch.Tensor:
    """Each row of ``x`` ``(..., m)`` sorted ascending, by the full sorting network.

    The same values as ``x.sort(dim=-1).values`` for rows without nan (a row with
    a nan gives unspecified values); 2–3x faster than it where
    :func:`network_pays`.

    Example:
        >>> import torch
        >>> sort_values(torch.tensor([[4.0, 1.0, 3.0], [0.0, -1.0, 5.0]]))
        tensor([[ 1.,  3.,  4.],
                [-1.,  0.,  5.]])
    """
    comparators, wires = selection_network(x.shape[-1], tuple(range(x.shape[-1])))

    def tile_sorted(tile: torch.Tensor) -> torch.Tensor:
        columns = _run(comparators, tile)
        # Stacked along the last dim: one strided copy into row order (measured
        # ~20% faster than stacking columns and transposing).
        return torch.stack([columns[w] for w in wires], dim=-1)

    return by_tiles(tile_sorted, x)


def by_tiles(fn, x: torch.Tensor, *per_row: torch.Tensor,
             elements: Optional[int] = None) -> torch.Tensor:
    """``fn(rows, *per_row)`` over tiles of the rows of ``x`` ``(..., m)``, concatenated.

    On the CPU, tiles of about ``elements`` values (default :func:`tile_rows`)
    bound the working memory and keep it in cache; the result is the same for
    any tiling.
    """
    m = x.shape[-1]
    rows = x.reshape(math.prod(x.shape[:-1]), m)
    extra = [r.reshape(rows.shape[0], r.shape[-1]) for r in per_row]
    step = tile_rows(m) if elements is None else max(1, elements // max(m, 1))
    # Tiles are for the CPU's caches: on an accelerator they would only multiply launches.
    if rows.shape[0] <= step or x.device.type != "cpu":
        out = fn(rows, *extra)
    else:
        tiles = zip(rows.split(step), *(r.split(step) for r in extra))
        out = torch.cat([fn(*tile) for tile in tiles])
    return out.reshape(x.shape[:-1] + out.shape[1:])


def _run(comparators, x: torch.Tensor) -> List[torch.Tensor]:
    """The columns of ``x`` ``(n, m)`` after the comparators: ``m`` tensors ``(n,)``."""
    # One transposing copy makes every column contiguous (measured 1.8x faster than
    # copying the columns one by one); with the columns that replace them, the
    # network holds about two copies of the tile.
    columns = list(x.T.contiguous().unbind(0))
    for a, b, low, high in comparators:
        first, second = columns[a], columns[b]
        if low:
            columns[a] = torch.minimum(first, second)
        if high:
            columns[b] = torch.maximum(first, second)
    return columns
