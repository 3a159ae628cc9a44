"""Per-sample gradient norms, exact, without materializing N×P gradients where possible."""

from __future__ import annotations

import math
from typing import List, Optional, Tuple

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import grad, vmap

from ..losses import mse
from ._setup import LOSS_PREFIX, Model, Params, Setup, check_output, prepare
from .persample import per_sample_grads

__all__ = ["per_sample_grad_norms", "grad_norm_method", "ELEMENTWISE"]

#: Parameter-free modules that act on each element alone, so they keep samples apart.
ELEMENTWISE = (
    nn.Identity, nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.ELU, nn.SELU, nn.CELU, nn.GELU,
    nn.SiLU, nn.Mish, nn.Tanh, nn.Sigmoid, nn.LogSigmoid, nn.Softplus, nn.Softsign,
    nn.Hardtanh, nn.Hardsigmoid, nn.Hardswish, nn.Tanhshrink, nn.Softshrink,
    nn.Hardshrink,
)

_METHODS = ("auto", "ghost", "materialize")


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
    where = prefix.rstrip(".") or "the model"
    return [], (
        f"{where} is a {type(module).__name__}, not nn.Linear, an elementwise "
        "activation, eval-mode Dropout or an nn.Sequential of those"
    )


def _ghost_reason(model: Model, inputs: torch.Tensor) -> str:
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
    """Which path :func:`per_sample_grad_norms` takes with ``method="auto"``.

    ``"ghost"`` for an ``nn.Linear`` or an ``nn.Sequential`` (nested allowed) of
    ``nn.Linear``, the activations in :data:`ELEMENTWISE` and eval-mode Dropout,
    applied to inputs of shape ``(N, features)``; ``"materialize"`` otherwise.

    Example:
        >>> import torch, lossfn
        >>> x = torch.zeros(8, 3)
        >>> mlp = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.Tanh(), torch.nn.Linear(4, 1))
        >>> lossfn.grad_norm_method(mlp, x), lossfn.grad_norm_method(torch.nn.LayerNorm(3), x)
        ('ghost', 'materialize')
    """
    return "materialize" if _ghost_reason(model, inputs) else "ghost"


def _ghost_norms(
    model: nn.Module, inputs: torch.Tensor, targets: torch.Tensor, setup: Setup
) -> torch.Tensor:
    """One forward, one backward to the linear layers' outputs, then ‖a‖²·‖g‖² per layer."""
    layers, _ = _layers(model)
    tensors = {**setup.fixed, **setup.params}
    x = inputs.detach()
    linear_in: List[torch.Tensor] = []
    linear_out: List[torch.Tensor] = []
    with torch.enable_grad():
        for name, layer in layers:
            if isinstance(layer, nn.Linear):
                weight = tensors[name + "weight"].detach()
                bias = tensors.get(name + "bias")
                z = F.linear(x, weight, None if bias is None else bias.detach())
                if not z.requires_grad:  # the first layer: start the graph here
                    z.requires_grad_(True)
                linear_in.append(x)
                linear_out.append(z)
                x = z
            else:
                # An in-place activation would overwrite the output we differentiate to.
                x = layer(x.clone() if getattr(layer, "inplace", False) else x)
        pred = x
        check_output("per_sample_grad_norms", pred.shape, targets.shape)
        loss_params = {k: v for k, v in setup.params.items() if k.startswith(LOSS_PREFIX)}

        def one_loss(p: torch.Tensor, lp: Params, y: torch.Tensor) -> torch.Tensor:
            return setup.call_loss(lp, p.unsqueeze(0), y.unsqueeze(0))

        # dℓ_i/dŷ_i for every sample (and the criterion's per-sample gradients):
        # cheap, since the loss is elementwise in the predictions.
        g_pred, g_loss = vmap(grad(one_loss, argnums=(0, 1)), in_dims=(0, None, 0))(
            pred.detach(), loss_params, targets
        )
        # Sample i's loss reaches only row i of every layer's output, so one backward
        # of Σ_i ℓ_i gives each sample's output gradient in its own row.
        g_out = torch.autograd.grad(pred, linear_out, grad_outputs=g_pred)
    sq = pred.new_zeros(inputs.shape[0])
    index = 0
    for name, layer in layers:
        if not isinstance(layer, nn.Linear):
            continue
        a, g = linear_in[index].detach(), g_out[index]
        index += 1
        g_sq = g.square().sum(-1)
        if name + "weight" in setup.params:
            # ‖g aᵀ‖²_F = ‖a‖²·‖g‖² for the outer product that is sample i's weight gradient.
            sq = sq + a.square().sum(-1) * g_sq
        if name + "bias" in setup.params:
            sq = sq + g_sq
    for value in g_loss.values():
        sq = sq + _row_square_sums(value.detach())
    return sq.sqrt()


def _row_square_sums(g: torch.Tensor) -> torch.Tensor:
    """``Σ g[i]²`` over all but the first dimension; fine for N = 0 and scalar params."""
    return g.square().reshape(g.shape[0], math.prod(g.shape[1:])).sum(-1)


def per_sample_grad_norms(
    model: Model,
    inputs: torch.Tensor,
    targets: torch.Tensor,
    *,
    loss: object = mse,
    params: Optional[Params] = None,
    chunk_size: Optional[int] = None,
    method: str = "auto",
) -> torch.Tensor:
    r"""Euclidean norm of each sample's gradient over all differentiated parameters.

    .. math:: \|g_i\| = \Big(\sum_{\text{params } p} \|\nabla_p\, \ell(f_\theta(x_i), y_i)\|^2\Big)^{1/2}

    The gradients are those of :func:`per_sample_grads` (same arguments, same
    ``"loss.<name>"`` criterion parameters). Two exact paths:

    - ``"ghost"``: for a linear layer ``z = W a + b`` sample i's gradient is the
      outer product ``g_i a_iᵀ`` (with ``g_i = ∂ℓ_i/∂z_i``), whose squared norm is
      ``‖a_i‖²·‖g_i‖²`` (plus ``‖g_i‖²`` for the bias). One batched forward and one
      backward to the layer outputs give every ``a_i`` and ``g_i``, so the cost is
      a small multiple of one backward pass and no ``N×P`` tensor is formed.
      Available where :func:`grad_norm_method` says ``"ghost"``.
    - ``"materialize"``: :func:`per_sample_grads`, then the norm; any model.

    Args:
        model, inputs, targets, loss, params, chunk_size: as for
            :func:`per_sample_grads` (``chunk_size`` applies to the materialize path).
        method: ``"auto"`` (ghost where possible), ``"ghost"`` (raise where it is
            not possible) or ``"materialize"``.

    Returns:
        ``(N,)`` norms, detached, in the parameters' dtype.

    Example:
        >>> import torch, lossfn
        >>> model = torch.nn.Linear(2, 1)
        >>> with torch.no_grad():
        ...     _ = model.weight.fill_(0.0), model.bias.fill_(0.0)
        >>> x = torch.tensor([[3.0, 4.0], [0.0, 0.0]])
        >>> y = torch.tensor([[1.0], [1.0]])
        >>> lossfn.per_sample_grad_norms(model, x, y)   # |2ε|·sqrt(‖x‖² + 1)
        tensor([10.1980,  2.0000])

    References:
        Goodfellow, "Efficient per-example gradient computations" (2015);
        Li et al., "Large language models can be strong differentially private
        learners" (ICLR 2022), ghost clipping.
    """
    fn = "per_sample_grad_norms"
    if method not in _METHODS:
        raise ValueError(f"{fn}: method must be one of {_METHODS}, got {method!r}.")
    setup = prepare(fn, model, inputs, targets, loss, params, chunk_size)
    why = _ghost_reason(model, inputs)
    if method == "ghost" and why:
        raise ValueError(
            f"{fn}: method='ghost' needs an nn.Sequential of nn.Linear and elementwise "
            f"activations on (N, features) inputs, but {why}. Use method='auto'."
        )
    if method != "materialize" and not why and inputs.shape[0] > 0:
        return _ghost_norms(model, inputs, targets, setup)
    grads = per_sample_grads(model, inputs, targets, loss=loss, params=params,
                             chunk_size=chunk_size)
    total = targets.new_zeros(inputs.shape[0])
    for g in grads.values():
        total = total + _row_square_sums(g)
    return total.sqrt()
