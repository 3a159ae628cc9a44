"""Mergeable co-moments and Monte Carlo standard errors against numpy."""

import numpy as np
import pytest
import torch

from lossfn.montecarlo._stats import Moments, block_moments, fold, merge, pack, summarize, unpack


def numpy_comoments(e):
    u = e - e.mean(1, keepdims=True)
    powers = np.stack([np.ones_like(u), u, u * u])
    return np.einsum("pkn,qln->pqkl", powers, powers)


def errors(n=1000, seed=0, offset=0.0):
    rng = np.random.default_rng(seed)
    e = rng.standard_normal((3, n)) * np.array([[1.0], [2.0], [0.5]])
    e[1] += 0.7 * e[0]
    e[2] = e[2] ** 3  # skewed, heavy: third and fourth moments matter
    return e + offset


def test_block_moments_are_central_comoments():
    e = errors()
    got = block_moments(torch.from_numpy(e).reshape(3, 4, 250))
    for g in range(4):
        part = e[:, 250 * g : 250 * (g + 1)]
        np.testing.assert_allclose(got.mean[g].numpy(), part.mean(1), rtol=1e-13)
        np.testing.assert_allclose(got.comoments[g].numpy(), numpy_comoments(part), rtol=1e-10,
                                   atol=1e-9)
    assert got.count.tolist() == [250.0] * 4


def test_a_blocks_bits_do_not_depend_on_its_neighbours():
    e = torch.from_numpy(errors(n=4096, seed=5)).reshape(3, 8, 512)
    together = block_moments(e)
    for g in range(8):
        alone = block_moments(e[:, g : g + 1].contiguous())
        assert all(torch.equal(a[g], b[0]) for a, b in zip(together, alone))


@pytest.mark.parametrize("cuts", [[137, 274, 411, 548, 685, 822, 959], [1, 2, 500], [999]])
def test_fold_of_blocks_equals_whole(cuts):
    e = errors(seed=1)
    parts = np.split(e, cuts, axis=1)
    blocks = Moments(*(torch.cat(t) for t in zip(*(block_moments(torch.from_numpy(p.copy())[:, None])
                                                   for p in parts))))
    got = fold(blocks)
    np.testing.assert_allclose(got.mean.numpy(), e.mean(1), rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(got.comoments.numpy(), numpy_comoments(e), rtol=1e-10, atol=1e-8)


def test_merge_is_stable_with_a_large_offset():
    # naive power sums lose every digit of the variance at offset 1e9
    e = errors(seed=2, offset=1e9)
    a, b = (block_moments(torch.from_numpy(e[:, None, :300].copy())),
            block_moments(torch.from_numpy(e[:, None, 300:].copy())))
    got = merge(a, b)
    np.testing.assert_allclose(np.diagonal(got.comoments[0, 2, 0].numpy()),
                               ((e - e.mean(1, keepdims=True)) ** 2).sum(1), rtol=1e-6)


def test_pack_round_trip():
    m = block_moments(torch.from_numpy(errors(n=50)).reshape(3, 2, 25))
    back = unpack(pack(m), 3)
    assert all(torch.equal(x, y) for x, y in zip(back, m))


def test_summary_matches_numpy_formulas():
    e = errors(n=5000, seed=4)
    s = summarize(fold(block_moments(torch.from_numpy(e)[:, None])), reference=0)
    n = e.shape[1]
    var = e.var(1, ddof=1)
    np.testing.assert_allclose(s.bias.numpy(), e.mean(1), rtol=1e-12)
    np.testing.assert_allclose(s.variance.numpy(), var, rtol=1e-12)
    np.testing.assert_allclose(s.bias_se.numpy(), np.sqrt(var / n), rtol=1e-12)
    np.testing.assert_allclose(s.mse.numpy(), (e**2).mean(1), rtol=1e-12)
    # se(mse) is the standard error of a mean of e²
    np.testing.assert_allclose(s.mse_se.numpy(), np.sqrt((e**2).var(1) / n), rtol=1e-9)
    # se(s²): the standard error of the mean of the squared deviations, up to O(1/n)
    d2 = (e - e.mean(1, keepdims=True)) ** 2
    np.testing.assert_allclose(s.variance_se.numpy(), np.sqrt(d2.var(1) / n), rtol=2e-3)
    np.testing.assert_allclose(s.efficiency.numpy(), var[0] / var, rtol=1e-12)
    # delta method for a ratio of two means of squared deviations
    for k in (1, 2):
        a, b = d2[0], d2[k]
        grad = np.array([1 / b.mean(), -a.mean() / b.mean() ** 2])
        cov = np.cov(np.stack([a, b]), ddof=0) / n
        assert s.efficiency_se[k].item() == pytest.approx(np.sqrt(grad @ cov @ grad), rel=2e-3)
    assert s.efficiency_se[0].item() == 0.0


@pytest.mark.parametrize("n", [1, 2, 7, 500, 513])
def test_fixed_order_sum_is_exact_enough_and_blind_to_its_neighbours(n):
    # The accelerator path, forced on the CPU: a row's bits must not depend on
    # how many rows share the call (CUDA's reduction kernels' do), and the
    # pairwise sum is within a few ulps of the exact one.
    import math

    from lossfn.montecarlo._stats import fixed_order_sum

    g = torch.Generator().manual_seed(n)
    x = torch.randn(6, n, generator=g, dtype=torch.float64) * 10 ** torch.randint(-3, 4, (6, n), generator=g)
    whole = fixed_order_sum(x, pairwise=True)
    for i in range(6):
        assert torch.equal(fixed_order_sum(x[i : i + 1], pairwise=True), whole[i : i + 1])
        exact = math.fsum(x[i].tolist())
        assert abs(whole[i].item() - exact) <= 4 * n * 2**-53 * x[i].abs().sum().item()
    assert torch.equal(fixed_order_sum(x, pairwise=False), x.sum(-1))


def test_block_moments_on_the_pairwise_path_are_central_comoments(monkeypatch):
    import functools

    from lossfn.montecarlo import _stats

    monkeypatch.setattr(_stats, "fixed_order_sum", functools.partial(_stats.fixed_order_sum, pairwise=True))
    g = torch.Generator().manual_seed(3)
    errors = torch.randn(2, 3, 50, generator=g, dtype=torch.float64)
    got = block_moments(errors)
    e = errors.numpy()
    np.testing.assert_allclose(got.mean.numpy(), e.mean(-1).T, rtol=1e-14)
    u = e - e.mean(-1, keepdims=True)
    np.testing.assert_allclose(got.comoments[:, 2, 0, 0, 0].numpy(), (u[0] ** 2).sum(-1), rtol=1e-12)
    np.testing.assert_allclose(got.comoments[:, 1, 1, 0, 1].numpy(), (u[0] * u[1]).sum(-1), rtol=1e-12, atol=1e-12)
    one = block_moments(errors[:, :1])  # a block's bits do not depend on its neighbours
    assert all(torch.equal(a[:1], b) for a, b in zip(got, one))
