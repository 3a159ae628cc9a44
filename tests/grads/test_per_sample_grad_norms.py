"""per_sample_grad_norms: ghost and materialize paths against a loop of backward passes."""

import warnings

import pytest
import torch
from torch import nn

import lossfn
import lossfn.grads._norms as norms_module

N, D = 10, 4


def data(dtype=torch.float32):
    g = torch.Generator().manual_seed(0)
    return (torch.randn(N, D, generator=g, dtype=dtype),
            3.0 * torch.randn(N, 1, generator=g, dtype=dtype))


def loop_norms(model, x, y, loss, extra=()):
    """The oracle: each sample's ordinary backward pass, then the norm of all .grad."""
    params = [p for p in model.parameters() if p.requires_grad] + list(extra)
    out = []
    for i in range(x.shape[0]):
        for p in params:
            p.grad = None
        loss(model(x[i : i + 1]), y[i : i + 1]).backward()
        out.append(torch.sqrt(sum(p.grad.square().sum() for p in params)))
    return torch.stack(out)


def mlp(*activations):
    torch.manual_seed(2)
    layers = [nn.Linear(D, 5)]
    for act in activations:
        layers += [act, nn.Linear(5, 5)]
    return nn.Sequential(*layers, nn.Linear(5, 1))


@pytest.mark.parametrize("loss", [lossfn.mse, lossfn.mae, lossfn.nn.HuberLoss(delta=0.7)],
                         ids=["mse", "mae", "huber"])
@pytest.mark.parametrize("model", [
    nn.Linear(D, 1),
    mlp(nn.ReLU()),
    mlp(nn.Tanh(), nn.Sequential(nn.GELU(), nn.Dropout(0.5).eval())),
    mlp(nn.ReLU(inplace=True), nn.Sigmoid()),
], ids=["linear", "mlp", "nested", "inplace"])
def test_ghost_matches_loop(model, loss, monkeypatch):
    x, y = data()
    want = loop_norms(model, x, y, loss)
    assert lossfn.grad_norm_method(model, x) == "ghost"

    def forbidden(*args, **kwargs):
        raise AssertionError("the ghost path must not materialize per-sample gradients")

    monkeypatch.setattr(norms_module, "_materialized_norms", forbidden)
    got = lossfn.per_sample_grad_norms(model, x, y, loss=loss)
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)
    assert not got.requires_grad


@pytest.mark.parametrize("loss", [lossfn.mse, lossfn.huber, lossfn.nn.MSELoss(reduction="sum")],
                         ids=["mse", "huber", "criterion-sum"])
def test_ghost_multi_output(loss):
    torch.manual_seed(4)
    model = nn.Sequential(nn.Linear(D, 6), nn.Softplus(), nn.Linear(6, 3))
    x, _ = data()
    y = 2.0 * torch.randn(N, 3)
    torch.testing.assert_close(lossfn.per_sample_grad_norms(model, x, y, loss=loss, method="ghost"),
                               loop_norms(model, x, y, loss), rtol=1e-5, atol=1e-6)


def test_ghost_against_opacus_ghost_clipping():
    grad_sample = pytest.importorskip("opacus.grad_sample")
    model = mlp(nn.ReLU())
    x, y = data()
    got = lossfn.per_sample_grad_norms(model, x, y, method="ghost")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        wrapped = grad_sample.GradSampleModuleFastGradientClipping(
            model, loss_reduction="sum", use_ghost_clipping=True)
        lossfn.mse(wrapped(x), y, reduction="sum").backward()
    torch.testing.assert_close(got, wrapped.get_norm_sample(), rtol=1e-5, atol=1e-6)


def test_materialize_matches_loop_and_ghost():
    model = mlp(nn.ReLU())
    x, y = data()
    want = loop_norms(model, x, y, lossfn.mse)
    got = lossfn.per_sample_grad_norms(model, x, y, method="materialize", chunk_size=3)
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)


def test_ghost_with_learned_scale_and_frozen_layer_float64():
    model = mlp(nn.Tanh()).double()
    model[0].weight.requires_grad_(False)
    model[2].bias.requires_grad_(False)
    crit = lossfn.nn.HuberNLLLoss(scale=2.0, learn_scale=True).double()
    x, y = data(torch.float64)
    want = loop_norms(model, x, y, crit, extra=[crit.log_scale])
    got = lossfn.per_sample_grad_norms(model, x, y, loss=crit, method="ghost")
    assert got.dtype == torch.float64
    torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)


def test_fallback_for_other_models():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(D, 3), nn.LayerNorm(3), nn.Linear(3, 1))
    x, y = data()
    assert lossfn.grad_norm_method(model, x) == "materialize"
    torch.testing.assert_close(lossfn.per_sample_grad_norms(model, x, y),
                               loop_norms(model, x, y, lossfn.mse), rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match=r"method='ghost'.*'1' is a LayerNorm"):
        lossfn.per_sample_grad_norms(model, x, y, method="ghost")


@pytest.mark.parametrize("model, inputs", [
    (nn.Sequential(nn.Linear(D, 2), nn.PReLU(), nn.Linear(2, 1)), torch.zeros(N, D)),
    (nn.Sequential(nn.Linear(D, 2), nn.Dropout(0.1)), torch.zeros(N, D)),  # training mode
    (nn.Linear(D, 1), torch.zeros(N, 3, D)),
    (nn.Sequential(nn.ReLU()), torch.zeros(N, D)),
    (lambda p, x: x @ p["w"], torch.zeros(N, D)),
])
def test_method_reports_materialize(model, inputs):
    assert lossfn.grad_norm_method(model, inputs) == "materialize"


def test_materialize_composes_with_an_outer_grad():
    # Σ_i ‖g_i‖² for f(x) = x·w under mse has gradient Σ_i 8 ε_i ‖x_i‖² x_i in w.
    x, y = data(torch.float64)
    w = torch.randn(D, 1, dtype=torch.float64)

    def penalty(w):
        norms = lossfn.per_sample_grad_norms(lambda p, x: x @ p["w"], x, y, params={"w": w},
                                             chunk_size=4)
        return norms.square().sum()

    eps = x @ w - y
    want = (8 * eps * x.square().sum(1, keepdim=True) * x).sum(0, keepdim=True).T
    torch.testing.assert_close(torch.func.grad(penalty)(w), want)


def test_function_model_and_bad_method():
    x, y = data()
    w = torch.randn(D, 1)
    got = lossfn.per_sample_grad_norms(lambda p, x: x @ p["w"], x, y, params={"w": w})
    # ∇_w (x·w − y)² = 2ε·x, so the norm is 2|ε|·‖x‖.
    torch.testing.assert_close(got, (2 * (x @ w - y).abs() * x.norm(dim=1, keepdim=True)).squeeze(-1))
    with pytest.raises(ValueError, match="method must be one of"):
        lossfn.per_sample_grad_norms(nn.Linear(D, 1), x, y, method="fast")


def test_shape_errors_on_both_paths():
    x, y = data()
    for method in ("ghost", "materialize"):
        with pytest.raises(lossfn.ShapeError, match="squeeze"):
            lossfn.per_sample_grad_norms(nn.Linear(D, 1), x, y.squeeze(-1), method=method)


def test_empty_batch():
    got = lossfn.per_sample_grad_norms(nn.Linear(D, 1), torch.zeros(0, D), torch.zeros(0, 1))
    assert got.shape == (0,)


@pytest.mark.parametrize("method", ["ghost", "materialize"])
def test_vmap_over_datasets_matches_one_at_a_time(method):
    torch.manual_seed(5)
    model = mlp(nn.ReLU())
    xs, ys = torch.randn(3, N, D), torch.randn(3, N, 1)

    def one(x, y):
        return lossfn.per_sample_grad_norms(model, x, y, method=method)

    mapped = torch.func.vmap(one)(xs, ys)
    torch.testing.assert_close(mapped, torch.stack([one(x, y) for x, y in zip(xs, ys)]))
    torch.testing.assert_close(mapped[1], loop_norms(model, xs[1], ys[1], lossfn.mse),
                               rtol=1e-5, atol=1e-6)
