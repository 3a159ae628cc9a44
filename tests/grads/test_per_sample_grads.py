"""per_sample_grads against a Python loop of backward passes and against opacus."""

import warnings

import pytest
import torch
from torch import nn

import lossfn
from lossfn import ShapeError

N, D = 12, 5


def data(dtype=torch.float32, out=1, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(N, D, generator=g, dtype=dtype)
    y = 2.0 * torch.randn(N, out, generator=g, dtype=dtype)
    return x, y


def mlp_with_batchnorm(dtype=torch.float32):
    torch.manual_seed(1)
    model = nn.Sequential(nn.Linear(D, 6), nn.BatchNorm1d(6), nn.Tanh(), nn.Linear(6, 1)).to(dtype)
    with torch.no_grad():  # non-trivial running statistics in the buffers
        for _ in range(3):
            model(3.0 * torch.randn(20, D, dtype=dtype) + 1.0)
    return model.eval()


def loop_grads(model, x, y, loss, extra=()):
    """The oracle: N ordinary backward passes, one sample each."""
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad] + list(extra)
    rows = []
    for i in range(x.shape[0]):
        for _, p in named:
            p.grad = None
        loss(model(x[i : i + 1]), y[i : i + 1]).backward()
        rows.append({n: p.grad.clone() for n, p in named})
    return {n: torch.stack([r[n] for r in rows]) for n, _ in named}


def assert_dicts_close(got, want, **tol):
    assert list(got) == list(want)
    for name in want:
        torch.testing.assert_close(got[name], want[name], **tol)


LOSSES = [lossfn.mse, lossfn.mae, lossfn.huber, lossfn.nn.HuberLoss(delta=0.5),
          lossfn.nn.LaplaceNLLLoss(scale=2.0)]


@pytest.mark.parametrize("loss", LOSSES, ids=lambda f: getattr(f, "__name__", type(f).__name__))
def test_matches_loop_with_buffers(loss):
    model = mlp_with_batchnorm()
    x, y = data()
    got = lossfn.per_sample_grads(model, x, y, loss=loss)
    want = loop_grads(model, x, y, loss)
    assert_dicts_close(got, want, rtol=1e-5, atol=1e-6)
    assert got["0.weight"].shape == (N, 6, D)


@pytest.mark.parametrize("method", ["outer", "vmap"])
def test_float64_and_multi_output(method):
    model = nn.Sequential(nn.Linear(D, 4), nn.GELU(), nn.Linear(4, 3)).double()
    x, y = data(torch.float64, out=3)
    got = lossfn.per_sample_grads(model, x, y, method=method)
    assert got["2.weight"].dtype == torch.float64
    assert_dicts_close(got, loop_grads(model, x, y, lossfn.mse), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("criterion", [lossfn.nn.GaussianNLLLoss, lossfn.nn.LaplaceNLLLoss,
                                       lossfn.nn.HuberNLLLoss])
@pytest.mark.parametrize("method", ["outer", "vmap"])
def test_learned_scale_gets_per_sample_grads(criterion, method):
    model = nn.Linear(D, 1)
    crit = criterion(scale=1.5, learn_scale=True)
    x, y = data()
    got = lossfn.per_sample_grads(model, x, y, loss=crit, method=method)
    assert list(got) == ["weight", "bias", "loss.log_scale"]
    want = loop_grads(model, x, y, crit, extra=[("loss.log_scale", crit.log_scale)])
    assert_dicts_close(got, want, rtol=1e-5, atol=1e-6)


def test_gaussian_log_scale_grad_closed_form():
    # ℓ = ε²/(2σ²) + log σ + c, so dℓ/dlog σ = 1 − ε²/σ².
    model = nn.Linear(D, 1).double()
    crit = lossfn.nn.GaussianNLLLoss(scale=0.7, learn_scale=True).double()
    x, y = data(torch.float64)
    got = lossfn.per_sample_grads(model, x, y, loss=crit)["loss.log_scale"]
    eps = (model(x) - y).detach().squeeze(-1)
    torch.testing.assert_close(got, 1.0 - eps**2 / 0.7**2)


def test_params_override_for_module_and_criterion():
    model = nn.Linear(D, 1)
    crit = lossfn.nn.GaussianNLLLoss(learn_scale=True)
    x, y = data()
    params = {"weight": torch.zeros(1, D), "bias": torch.ones(1),
              "loss.log_scale": torch.tensor(0.0)}
    got = lossfn.per_sample_grads(model, x, y, loss=crit, params=params)
    # pred = 1 everywhere, σ = 1: dℓ/db = (1 − y), dℓ/dW = (1 − y)·x.
    torch.testing.assert_close(got["bias"], 1.0 - y)
    torch.testing.assert_close(got["weight"], ((1.0 - y) * x).unsqueeze(1))


@pytest.mark.parametrize("method", ["outer", "vmap"])
def test_frozen_parameters_are_left_out(method):
    model = nn.Sequential(nn.Linear(D, 3), nn.ReLU(), nn.Linear(3, 1))
    model[0].weight.requires_grad_(False)
    x, y = data()
    got = lossfn.per_sample_grads(model, x, y, method=method)
    assert list(got) == ["0.bias", "2.weight", "2.bias"]
    assert_dicts_close(got, loop_grads(model, x, y, lossfn.mse), rtol=1e-5, atol=1e-6)


def test_pure_function_model():
    x, y = data()
    w, b = torch.randn(D, 1), torch.randn(1)

    def f(params, inputs):
        return torch.sin(inputs @ params["w"]) + params["b"]

    got = lossfn.per_sample_grads(f, x, y, params={"w": w, "b": b}, loss=lossfn.mae)
    # d/dθ |sin(x·w) + b − y| = sign(ε)·(cos(x·w)·x, 1)
    eps = torch.sin(x @ w) + b - y
    torch.testing.assert_close(got["b"], torch.sign(eps))
    torch.testing.assert_close(got["w"], (torch.sign(eps) * torch.cos(x @ w) * x).unsqueeze(-1))


def test_composes_with_an_outer_grad():
    # A gradient penalty Σ_i ‖g_i‖² for f(x) = x·w under mse: g_i = 2ε_i x_i, so
    # its gradient in w is Σ_i 8 ε_i ‖x_i‖² x_i.
    x, y = data(torch.float64)
    w = torch.randn(D, 1, dtype=torch.float64)

    def penalty(w):
        grads = lossfn.per_sample_grads(lambda p, x: x @ p["w"], x, y, params={"w": w})
        return grads["w"].square().sum()

    eps = x @ w - y
    want = (8 * eps * x.square().sum(1, keepdim=True) * x).sum(0, keepdim=True).T
    torch.testing.assert_close(torch.func.grad(penalty)(w), want)


def test_outer_path_composes_with_an_outer_grad():
    # The same penalty through a module (the "outer" path) with params given.
    x, y = data(torch.float64)
    model = nn.Linear(D, 1, bias=False).double()
    w = torch.randn(1, D, dtype=torch.float64)

    def penalty(w):
        grads = lossfn.per_sample_grads(model, x, y, params={"weight": w}, method="outer")
        return grads["weight"].square().sum()

    eps = x @ w.T - y
    want = (8 * eps * x.square().sum(1, keepdim=True) * x).sum(0, keepdim=True)
    torch.testing.assert_close(torch.func.grad(penalty)(w), want)


def test_paths_are_chosen_and_refused():
    x, y = data()
    with pytest.raises(ValueError, match=r"method='outer'.*'1' is a BatchNorm1d"):
        lossfn.per_sample_grads(mlp_with_batchnorm(), x, y, method="outer")
    with pytest.raises(ValueError, match="method must be one of"):
        lossfn.per_sample_grads(nn.Linear(D, 1), x, y, method="ghost")


def test_chunk_size_gives_the_same_result():
    model = mlp_with_batchnorm()
    x, y = data()
    whole = lossfn.per_sample_grads(model, x, y)
    for chunk in (1, 5, 100):
        assert_dicts_close(lossfn.per_sample_grads(model, x, y, chunk_size=chunk), whole,
                           rtol=1e-6, atol=1e-7)


def test_empty_batch():
    model = nn.Linear(D, 2)
    got = lossfn.per_sample_grads(model, torch.zeros(0, D), torch.zeros(0, 2))
    assert got["weight"].shape == (0, 2, D)


@pytest.mark.parametrize("method", ["outer", "vmap"])
@pytest.mark.parametrize("hidden", [None, 7])
def test_against_opacus(hidden, method):
    opacus = pytest.importorskip("opacus")
    torch.manual_seed(3)
    if hidden is None:
        model = nn.Linear(D, 1)
    else:
        model = nn.Sequential(nn.Linear(D, hidden), nn.ReLU(), nn.Linear(hidden, 1))
    x, y = data()
    got = lossfn.per_sample_grads(model, x, y, method=method)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        gsm = opacus.GradSampleModule(model, loss_reduction="sum")
        # With a summed loss, opacus' grad_sample is each sample's own gradient.
        lossfn.mse(gsm(x), y, reduction="sum").backward()
    for name, p in model.named_parameters():
        torch.testing.assert_close(got[name], p.grad_sample, rtol=1e-5, atol=1e-6)


# ---- bad input ---------------------------------------------------------------

def test_output_shape_mismatch_has_the_squeeze_hint():
    x, y = data()
    with pytest.raises(ShapeError, match=r"per_sample_grads.*\(12, 1\).*\(12,\).*squeeze"):
        lossfn.per_sample_grads(nn.Linear(D, 1), x, y.squeeze(-1))


def test_different_n():
    x, y = data()
    with pytest.raises(ShapeError, match=r"same number of samples.*N=11.*N=12"):
        lossfn.per_sample_grads(nn.Linear(D, 1), x[:11], y)


def test_integer_targets():
    x, _ = data()
    with pytest.raises(TypeError, match=r"targets has dtype torch.int64.*class labels"):
        lossfn.per_sample_grads(nn.Linear(D, 1), x, torch.zeros(N, 1, dtype=torch.long))


def test_params_missing_a_name():
    model = nn.Linear(D, 1)
    x, y = data()
    with pytest.raises(KeyError, match=r"missing \['bias'\]"):
        lossfn.per_sample_grads(model, x, y, params={"weight": model.weight})
    with pytest.raises(KeyError, match=r"unknown \['wieght'\]"):
        lossfn.per_sample_grads(model, x, y, params={"wieght": model.weight, "bias": model.bias,
                                                     "weight": model.weight})
    with pytest.raises(KeyError, match=r"looked up params\['w'\].*Add the missing"):
        lossfn.per_sample_grads(lambda p, x: x @ p["w"], x, y, params={"v": torch.ones(D, 1)})
    with pytest.raises(KeyError, match=r"loss.scale.*no trainable parameter"):
        lossfn.per_sample_grads(model, x, y, params={**dict(model.named_parameters()),
                                                     "loss.scale": torch.ones(())})


def test_other_bad_arguments():
    x, y = data()
    model = nn.Linear(D, 1)
    with pytest.raises(TypeError, match="params= .* is required"):
        lossfn.per_sample_grads(lambda p, x: x, x, y)
    with pytest.raises(ValueError, match="BatchNorm in training mode.*model.eval"):
        lossfn.per_sample_grads(mlp_with_batchnorm().train(), x, y)
    with pytest.raises(ValueError, match="Dropout in training mode.*model.eval"):
        lossfn.per_sample_grads(nn.Sequential(nn.Linear(D, 1), nn.Dropout(0.2)), x, y)
    with pytest.raises(ValueError, match="scalar for one sample.*'none'"):
        lossfn.per_sample_grads(model, x, y, loss=lossfn.nn.MSELoss(reduction="none"))
    with pytest.raises(ValueError, match="chunk_size"):
        lossfn.per_sample_grads(model, x, y, chunk_size=0)
    with pytest.raises(TypeError, match="loss must be"):
        lossfn.per_sample_grads(model, x, y, loss="mse")


def test_inputs_are_not_mutated():
    model = mlp_with_batchnorm()
    x, y = data()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    x0, y0 = x.clone(), y.clone()
    lossfn.per_sample_grads(model, x, y)
    assert torch.equal(x, x0) and torch.equal(y, y0)
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k])
    assert all(p.grad is None for p in model.parameters())


def test_vmap_over_datasets_matches_one_at_a_time():
    g = torch.Generator().manual_seed(6)
    xs, ys = torch.randn(3, N, D, generator=g), torch.randn(3, N, 1, generator=g)
    w = torch.randn(D, 1, generator=g)

    def one(x, y):
        return lossfn.per_sample_grads(lambda p, x: torch.tanh(x @ p["w"]), x, y,
                                       params={"w": w})["w"]

    mapped = torch.func.vmap(one)(xs, ys)
    torch.testing.assert_close(mapped, torch.stack([one(x, y) for x, y in zip(xs, ys)]))


def test_auto_takes_the_outer_path_for_linear_stacks_only(monkeypatch):
    import lossfn.grads._persample as persample

    calls = []
    real = persample._outer
    monkeypatch.setattr(persample, "_outer", lambda *a: calls.append(1) or real(*a))
    x, y = data()
    mlp = nn.Sequential(nn.Linear(D, 3), nn.ReLU(), nn.Linear(3, 1))
    lossfn.per_sample_grads(mlp, x, y)
    assert calls == [1]
    lossfn.per_sample_grads(mlp_with_batchnorm(), x, y)
    lossfn.per_sample_grads(mlp, x, y, method="vmap")
    assert calls == [1]


def test_outer_path_under_vmap_over_datasets():
    torch.manual_seed(7)
    model = nn.Sequential(nn.Linear(D, 3), nn.Tanh(), nn.Linear(3, 1))
    xs, ys = torch.randn(2, N, D), torch.randn(2, N, 1)

    def one(x, y):
        return lossfn.per_sample_grads(model, x, y, method="outer")["0.weight"]

    mapped = torch.func.vmap(one)(xs, ys)
    want = torch.stack([loop_grads(model, x, y, lossfn.mse)["0.weight"] for x, y in zip(xs, ys)])
    torch.testing.assert_close(mapped, want, rtol=1e-5, atol=1e-6)
