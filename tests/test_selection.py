"""Selection networks against Knuth's comparator count, the 0-1 principle and numpy's median."""

import itertools
import math

import numpy as np
import pytest
import torch
from torch.func import grad, vmap

from lossfn import _selection, location


@pytest.mark.parametrize("p", range(1, 8))
def test_batcher_network_has_knuths_size_and_sorts_every_0_1_input(p):
    n = 2**p
    pairs = _selection.batcher_comparators(n)
    # TAOCP vol. 3, §5.3.4, exercise 36: (p² − p + 4)·2^(p−2) − 1 comparators.
    assert len(pairs) == (p * p - p + 4) * 2 ** (p - 2) - 1
    if n <= 16:  # the 0-1 principle: sorting all 2^n 0/1 vectors proves it sorts everything
        x = np.array(list(itertools.product([0, 1], repeat=n)), dtype=np.int8)
        for i, j in pairs:
            low, high = np.minimum(x[:, i], x[:, j]), np.maximum(x[:, i], x[:, j])
            x[:, i], x[:, j] = low, high
        assert (np.diff(x, axis=1) >= 0).all()


@pytest.mark.parametrize("m", range(1, 17))
def test_median_network_is_exact_on_every_0_1_input(m):
    # By the 0-1 principle this proves the pruned network right for all inputs of size m.
    x = torch.tensor(list(itertools.product([0.0, 1.0], repeat=m)))
    np.testing.assert_array_equal(_selection.middle(x).numpy(), np.median(x.numpy(), axis=-1))


def _mixed(m, rows, gen, dtype):
    """Random rows with ties, ±inf and signed zeros mixed in."""
    x = torch.randn(rows, m, generator=gen, dtype=torch.float64)
    ties = torch.randint(-3, 4, (rows, m), generator=gen).double()
    pick = torch.randint(0, 8, (rows, m), generator=gen)
    x = torch.where(pick == 0, ties, x)
    x = torch.where(pick == 1, torch.tensor(math.inf, dtype=torch.float64), x)
    x = torch.where(pick == 2, torch.tensor(-math.inf, dtype=torch.float64), x)
    x = torch.where(pick == 3, torch.tensor(-0.0, dtype=torch.float64), x)
    return x.to(dtype)


def _sorted_oracle(x):
    """Mid-pair average from a float64 sort: exact, then rounded once to the dtype."""
    m = x.shape[-1]
    ordered = x.double().sort(-1).values
    mid = (ordered[..., (m - 1) // 2] + ordered[..., m // 2]) / 2
    return mid.to(x.dtype)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32, torch.float64])
def test_median_network_equals_sorting_and_numpy_for_m_1_to_80(dtype, gen):
    for m in range(1, 81):
        x = _mixed(m, 40, gen, dtype)
        got = _selection.middle(x)
        assert got.dtype == dtype and got.shape == (40,)
        torch.testing.assert_close(got, _sorted_oracle(x), rtol=0, atol=0, equal_nan=True)
        if dtype in (torch.float32, torch.float64):
            np.testing.assert_array_equal(got.numpy(), np.median(x.numpy(), axis=-1))


@pytest.mark.parametrize("m", range(1, 81))
def test_a_nan_anywhere_gives_nan(m):
    x = torch.arange(m * m, dtype=torch.float32).reshape(m, m).remainder(7)
    x.diagonal().fill_(math.nan)  # row i has its nan at position i
    x = torch.cat([x, torch.ones(1, m)])
    got = _selection.middle(x)
    assert torch.isnan(got[:m]).all() and got[m].item() == 1.0


def test_result_never_aliases_the_input():
    x = torch.ones(5, 1)
    out = _selection.middle(x)
    out += 1
    assert (x == 1).all()


@pytest.mark.parametrize("m", [7, 8, 25])
def test_location_median_takes_the_network_on_many_rows(m, gen):
    x = torch.randn(3, 700, m, generator=gen)
    assert _selection.network_pays(x)
    assert not _selection.network_pays(x[:1, :10])
    assert not _selection.network_pays(torch.empty(10_000, m, device="meta"))
    np.testing.assert_array_equal(location.median(x).numpy(), np.median(x.numpy(), axis=-1))
    # Batched datasets (vmap over the leading dim) give bitwise the same medians.
    torch.testing.assert_close(vmap(location.median)(x), location.median(x), rtol=0, atol=0)


@pytest.mark.parametrize("m", [6, 9])
def test_gradient_of_the_network_median(m, gen):
    x = torch.randn(2048, m, generator=gen, dtype=torch.float64)
    assert _selection.network_pays(x)
    g = grad(lambda a: location.median(a).sum())(x)
    order = np.argsort(x.numpy(), axis=-1)
    expected = np.zeros(x.shape)
    rows = np.arange(x.shape[0])
    expected[rows, order[:, (m - 1) // 2]] += 0.5
    expected[rows, order[:, m // 2]] += 0.5
    np.testing.assert_array_equal(g.numpy(), expected)
    per_row = vmap(grad(lambda a: _selection.middle(a)))(x)
    np.testing.assert_array_equal(per_row.numpy(), expected)


@pytest.mark.parametrize("m", [2, 5, 8])
def test_tiles_of_rows_give_bitwise_the_same_medians(m, gen, monkeypatch):
    x = torch.randn(3, 50, m, generator=gen)
    whole = _selection.middle(x)
    monkeypatch.setattr(_selection, "tile_rows", lambda m: 7)  # uneven tiles
    tiled = _selection.middle(x)
    torch.testing.assert_close(tiled, whole, rtol=0, atol=0)
    np.testing.assert_array_equal(tiled.numpy(), np.median(x.numpy(), axis=-1))


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32, torch.float64])
def test_ranked_equals_torch_sort_for_m_1_to_80(dtype, gen):
    for m in range(1, 81):
        x = _mixed(m, 30, gen, dtype)
        ranks = torch.randint(0, m, (30, 3), generator=gen)
        got = _selection.ranked(x, ranks)
        expected = x.sort(dim=-1).values.gather(-1, ranks)
        assert got.dtype == dtype
        torch.testing.assert_close(got, expected, rtol=0, atol=0)


def test_ranked_in_tiles_and_batched(gen, monkeypatch):
    x = torch.randn(2, 3, 40, 6, generator=gen)
    ranks = torch.randint(0, 6, (2, 3, 40, 2), generator=gen)
    expected = x.sort(dim=-1).values.gather(-1, ranks)
    torch.testing.assert_close(_selection.ranked(x, ranks), expected, rtol=0, atol=0)
    monkeypatch.setattr(_selection, "tile_rows", lambda m: 7)
    torch.testing.assert_close(_selection.ranked(x, ranks), expected, rtol=0, atol=0)
    torch.testing.assert_close(vmap(_selection.ranked)(x, ranks), expected, rtol=0, atol=0)


@pytest.mark.parametrize("dtype", [torch.float16, torch.float32, torch.float64])
def test_sort_values_equals_torch_sort_for_m_1_to_80(dtype, gen):
    for m in range(1, 81):
        x = _mixed(m, 30, gen, dtype)
        got = _selection.sort_values(x)
        assert got.dtype == dtype and got.is_contiguous()
        torch.testing.assert_close(got, x.sort(dim=-1).values, rtol=0, atol=0)


def test_sort_values_in_tiles_batched_and_under_vmap(gen, monkeypatch):
    x = torch.randn(2, 3, 40, 6, generator=gen)
    expected = x.sort(dim=-1).values
    torch.testing.assert_close(_selection.sort_values(x), expected, rtol=0, atol=0)
    monkeypatch.setattr(_selection, "tile_rows", lambda m: 7)
    torch.testing.assert_close(_selection.sort_values(x), expected, rtol=0, atol=0)
    torch.testing.assert_close(vmap(_selection.sort_values)(x), expected, rtol=0, atol=0)
    # An explicit tile size takes precedence: 5 values are one row of 5 per tile.
    rows = torch.randn(11, 5, generator=gen)
    tiled = _selection.by_tiles(lambda t: t.sum(-1, keepdim=True) * t.shape[0], rows, elements=5)
    torch.testing.assert_close(tiled, rows.sum(-1, keepdim=True))
