"""Stacks of linear layers: one forward and one backward give every per-sample gradient.

For ``z = W a + b`` applied to a batch, sample i's gradient of its own loss is the
outer product ``g_i a_iᵀ`` (and ``g_i`` for the bias), with ``a_i`` the layer's
input and ``g_i = ∂ℓ_i/∂z_i``. In an ``nn.Sequential`` of ``nn.Linear`` layers and
elementwise activations, sample i's loss depends on row i of each layer's output
only, so one backward pass of ``Σ_i ℓ_i`` yields every ``g_i`` at once
(Goodfellow, "Efficient per-example gradient computations", 2015).
"""

from __future__ import annotations

import math
from typing import Dict, List, NamedTuple, Tuple

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import grad, vjp, vmap

from ..losses import huber, mae, mse
from ._setup import LOSS_PREFIX, Model, Params, Setup, check_output
from ._pred_grad import pred_grad

__all__ = ["ELEMENTWISE", "LinearPass", "grad_norm_method", "why_not", "linear_pass"]

#: Parameter-free modules that act on each element alone, so they keep samples apart.
ELEMENTWISE = (
    nn.Identity, nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.ELU, nn.SELU, nn.CELU, nn.GELU,
    nn.SiLU, nn.Mish, nn.Tanh, nn.Sigmoid, nn.LogSigmoid, nn.Softplus, nn.Softsign,
    nn.Hardtanh, nn.Hardsigmoid, nn.Hardswish, nn.Tanhshrink, nn.Softshrink,
    nn.Hardshrink,
)


def _layers(module: nn.Module, prefix: str = "") -> Tuple[List[Tuple[str, nn.Module]], str]:
    """Flatten nested ``nn.Sequential``; return the layers and why not, if not possible."""
    if isinstance(module, nn.Linear):
        return [(prefix, module)], ""
    if isinstance(module, ELEMENTWISE) or (isinstance(module, nn.Dropout) and not module.training):
        # Elementwise and without tensors of its own (a subclass could add some).
        if next(module.parameters(), None) is None and next(module.buffers(), None) is None:
            return [(prefix, module)], ""
    if isinstance(module, nn.Sequential):
        layers: List[Tuple[str, nn.Module]] = []
        for name, child in module.named_children():
            inner, why = _layers(child, f"{prefix}{name}.")
            if why:
                return [], why
            layers += inner
        return layers, ""
    where = f"module {prefix.rstrip('.')!r}" if prefix else "the model"
    return [], (
        f"{where} is a {type(module).__name__}, not nn.Linear, an elementwise "
        "activation, eval-mode Dropout or an nn.Sequential of those"
    )


def why_not(model: Model, inputs: torch.Tensor) -> str:
    """Why ``model`` is not a linear stack on ``inputs``, or ``""`` if it is."""
    if not isinstance(model, nn.Module):
        return "the model is a function, not an nn.Module"
    layers, why = _layers(model)
    if why:
        return why
    if not any(isinstance(layer, nn.Linear) for _, layer in layers):
        return "the model has no nn.Linear layer"
    if inputs.dim() != 2:
        return f"inputs have shape {tuple(inputs.shape)}, not (N, features)"
    return ""


def grad_norm_method(model: Model, inputs: torch.Tensor) -> str:
    """Which path :func:`lossfn.per_sample_grad_norms` takes with ``method="auto"``.

    ``"ghost"`` for an ``nn.Linear`` or an ``nn.Sequential`` (nested allowed) of
    ``nn.Linear``, the activations in :data:`ELEMENTWISE` and eval-mode Dropout,
    applied to inputs of shape ``(N, features)``; ``"materialize"`` otherwise.
    :func:`lossfn.per_sample_grads` takes its ``"outer"`` path for the same models.

    Example:
        >>> import torch, lossfn
        >>> from torch import nn
        >>> x = torch.zeros(8, 3)
        >>> mlp = nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 1))
        >>> lossfn.grad_norm_method(mlp, x), lossfn.grad_norm_method(nn.LayerNorm(3), x)
        ('ghost', 'materialize')
    """
    return "materialize" if why_not(model, inputs) else "ghost"


class LinearPass(NamedTuple):
    """What one forward and one backward through a linear stack leave behind."""

    names: List[str]  # prefix of each nn.Linear ("0.", "2.", ...; "" for a bare Linear)
    inputs: List[torch.Tensor]  # a: (N, in) input of each linear layer
    out_grads: List[torch.Tensor]  # g: (N, out) each sample's ∂ℓ_i/∂z_i
    loss_grads: Dict[str, torch.Tensor]  # "loss.<name>": (N, *shape), criterion params


#: lossfn losses whose gradient in the predictions has a closed form (pred_grad).
_CLOSED_FORM = ((mse, "mse"), (mae, "mae"), (huber, "huber"))


def _loss_grads(loss: object, setup: Setup, pred: torch.Tensor, targets: torch.Tensor):
    """``∂ℓ_i/∂ŷ_i`` for every sample, and the criterion's per-sample gradients.

    Sample i's loss is a "mean" over its own elements; for mse, mae and huber
    that is :func:`pred_grad` divided by the elements per sample, which saves
    the fixed cost of ``vmap(grad)`` on small models. Anything else (criteria,
    learned scales) goes through ``vmap(grad)`` of the one-sample loss, which is
    cheap too since the loss is elementwise in the predictions.
    """
    name = next((name for fn, name in _CLOSED_FORM if fn is loss), None)
    if name is not None:
        per_sample = math.prod(pred.shape[1:])
        return pred_grad(pred, targets, loss=name, reduction="sum") / per_sample, {}
    loss_params = {k: v for k, v in setup.params.items() if k.startswith(LOSS_PREFIX)}

    def one_loss(p: torch.Tensor, lp: Params, y: torch.Tensor) -> torch.Tensor:
        return setup.call_loss(lp, p.unsqueeze(0), y.unsqueeze(0))

    return vmap(grad(one_loss, argnums=(0, 1)), in_dims=(0, None, 0))(pred, loss_params, targets)


def linear_pass(
    fn: str, model: nn.Module, inputs: torch.Tensor, targets: torch.Tensor, loss: object,
    setup: Setup,
) -> LinearPass:
    """One forward and one backward through a model for which :func:`why_not` is ``""``."""
    layers, _ = _layers(model)
    tensors = {**setup.fixed, **setup.params}
    linears = [(name, layer) for name, layer in layers if isinstance(layer, nn.Linear)]

    def forward(probes: List[torch.Tensor]):
        # Each linear output gets a zero "probe" added, so the vector-Jacobian
        # product with respect to the probes is the gradient at the layer outputs.
        x, linear_in, k = inputs, [], 0
        for name, layer in layers:
            if isinstance(layer, nn.Linear):
                linear_in.append(x)
                x = F.linear(x, tensors[name + "weight"], tensors.get(name + "bias")) + probes[k]
                k += 1
            else:
                x = layer(x)
        return x, linear_in

    weight = tensors[linears[0][0] + "weight"]
    probes = [weight.new_zeros(inputs.shape[0], layer.out_features) for _, layer in linears]
    # torch.func.vjp rather than torch.autograd, so that this composes with vmap/grad.
    pred, backward, linear_in = vjp(forward, probes, has_aux=True)
    check_output(fn, pred.shape, targets.shape)
    g_pred, g_loss = _loss_grads(loss, setup, pred, targets)
    # Sample i's loss reaches only row i of every layer's output, so one backward
    # of Σ_i ℓ_i gives each sample's output gradient in its own row.
    (g_out,) = backward(g_pred)
    return LinearPass([name for name, _ in linears], linear_in, list(g_out), g_loss)
