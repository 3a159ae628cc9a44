"""fit.location_scale: NIST univariate certified values, numpy/scipy oracles, dispatch."""

from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.optimize
import scipy.stats
import torch

import lossfn
from lossfn import fit
from nist_reference import UNIVARIATE, lre, univariate

# LRE gates for the mean and SD (issue 3): 13 unless the data's binary
# representation limits what any float64 computation can reach.
GATE = {"Mavro": 12, "Michelso": 12, "NumAcc3": 9, "NumAcc4": 8}


@pytest.mark.parametrize("name", UNIVARIATE)
def test_nist_mean_and_sd(name):
    values, meta = univariate(name)
    est = fit.location_scale(torch.tensor(values), "gaussian")
    n = meta["n"]
    assert len(values) == n
    gate = GATE.get(name, 13)
    assert lre(est.location.item(), meta["mean"]) >= gate
    # lossfn's scale is the MLE (ddof 0); NIST certifies the sample SD (ddof 1).
    assert lre(est.scale.item() * math.sqrt(n / (n - 1)), meta["sd"]) >= gate


def test_nist_sets_padded_into_one_batch():
    names = ["Lew", "Mavro", "NumAcc1", "NumAcc3"]
    data = [univariate(name) for name in names]
    m = max(len(v) for v, _ in data)
    samples = torch.full((len(names), m), math.nan, dtype=torch.float64)
    mask = torch.zeros(len(names), m, dtype=torch.bool)
    for k, (values, _) in enumerate(data):
        samples[k, : len(values)] = torch.tensor(values)
        mask[k, : len(values)] = True
    est = fit.location_scale(samples, "gaussian", mask=mask)
    for k, (name, (_, meta)) in enumerate(zip(names, data)):
        assert lre(est.location[k].item(), meta["mean"]) >= GATE.get(name, 13)


def test_laplace_is_median_and_mean_absolute_deviation():
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(5, 8, generator=gen, dtype=torch.float64)
    est = fit.location_scale(x, "laplace")
    median = np.median(x.numpy(), axis=-1)
    np.testing.assert_allclose(est.location.numpy(), median, rtol=1e-14)
    np.testing.assert_allclose(
        est.scale.numpy(), np.abs(x.numpy() - median[:, None]).mean(-1), rtol=1e-13)


@pytest.mark.parametrize("noise", ["huber", lossfn.Huber(delta=2.0)])
def test_huber_solves_the_estimating_equation(noise):
    delta = 1.345 if noise == "huber" else 2.0
    gen = torch.Generator().manual_seed(1)
    x = torch.cat([torch.randn(3, 40, generator=gen, dtype=torch.float64),
                   20 + torch.rand(3, 5, generator=gen, dtype=torch.float64)], dim=-1)
    est = fit.location_scale(x, noise)
    for k in range(3):
        xs = x[k].numpy()
        s = scipy.stats.median_abs_deviation(xs, scale="normal")
        root = scipy.optimize.brentq(
            lambda mu: np.clip((xs - mu) / s, -delta, delta).sum(), xs.min(), xs.max(), xtol=1e-14)
        assert est.location[k].item() == pytest.approx(root, rel=1e-10)
        assert est.scale[k].item() == pytest.approx(s, rel=1e-10)


def test_noise_model_instances_and_dim():
    gen = torch.Generator().manual_seed(2)
    x = torch.randn(7, 3, generator=gen, dtype=torch.float64)
    by_name = fit.location_scale(x, "gaussian", dim=0)
    by_model = fit.location_scale(x, lossfn.Gaussian(), dim=0)
    torch.testing.assert_close(by_name.location, torch.tensor(x.numpy().mean(0)))
    torch.testing.assert_close(by_name.scale, torch.tensor(x.numpy().std(0)))
    torch.testing.assert_close(tuple(by_model), tuple(by_name))


def test_vmap_equals_batched():
    gen = torch.Generator().manual_seed(3)
    x = torch.randn(4, 9, generator=gen, dtype=torch.float64)
    mask = torch.rand(4, 9, generator=gen) < 0.7
    for noise in ("gaussian", "laplace"):
        batched = fit.location_scale(x, noise, mask=mask)
        mapped = torch.func.vmap(lambda a, b: fit.location_scale(a, noise, mask=b))(x, mask)
        torch.testing.assert_close(tuple(mapped), tuple(batched))


def test_unknown_noise_lists_the_options():
    with pytest.raises(ValueError) as info:
        fit.location_scale(torch.zeros(3), "cauchy")
    message = str(info.value)
    assert "'cauchy'" in message and all(n in message for n in ("gaussian", "laplace", "huber"))
    with pytest.raises(TypeError, match="NoiseModel"):
        fit.location_scale(torch.zeros(3), 3.0)
