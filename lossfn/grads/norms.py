"""Per-sample gradient norms, exact, without materializing N×P gradients where possible."""

from __future__ import annotations

import math
from typing import List, Optional, Tuple

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import grad, vjp, vmap

from ..losses import huber, mae, mse
from ._setup import LOSS_PREFIX, Model, Params, Setup, check_output, prepare
from .pred_grad import pred_grad

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
    where = f"module {prefix.rstrip('.')!r}" if prefix else "the model"
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
        >>> from torch import nn
        >>> mlp = nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 1))
        >>> lossfn.grad_norm_method(mlp, x), lossfn.grad_norm_method(torch.nn.LayerNorm(3), x)
        ('ghost', 'materialize')
    """
    return "materialize" if _ghost_reason(model, inputs) else "ghost"


def _ghost_norms(
    model: nn.Module, inputs: torch.Tensor, targets: torch.Tensor, loss: object, setup: Setup
) -> torch.Tensor:
    """One forward, one backward to the linear outputs, then ‖a‖²·‖g‖² per layer."""
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
    check_output("per_sample_grad_norms", pred.shape, targets.shape)
    g_pred, g_loss = _loss_grads(loss, setup, pred, targets)
    # Sample i's loss reaches only row i of every layer's output, so one backward
    # of Σ_i ℓ_i gives each sample's output gradient in its own row.
    (g_out,) = backward(g_pred)
    sq = pred.new_zeros(inputs.shape[0])
    for (name, _), a, g in zip(linears, linear_in, g_out):
        g_sq = g.square().sum(-1)
        if name + "weight" in setup.params:
            # Sample i's weight gradient is g aᵀ, and ‖g aᵀ‖²_F = ‖a‖²·‖g‖².
            sq = sq + a.square().sum(-1) * g_sq
        if name + "bias" in setup.params:
            sq = sq + g_sq
    for value in g_loss.values():
        sq = sq + _row_square_sums(value)
    return sq.sqrt()


def _row_square_sums(g: torch.Tensor) -> torch.Tensor:
    """``Σ g[i]²`` over all but the first dimension; fine for N = 0 and scalar params."""
    return g.square().reshape(g.shape[0], math.prod(g.shape[1:])).sum(-1)


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

    .. math:: \|g_i\| = \Big(\sum_{\text{params } p}
              \|\nabla_p\, \ell(f_\theta(x_i), y_i)\|^2\Big)^{1/2}

    The gradients are those of :func:`per_sample_grads` (same arguments, same
    ``"loss.<name>"`` criterion parameters). Two exact paths:

    - ``"ghost"``: for a linear layer ``z = W a + b`` sample i's gradient is the
      outer product ``g_i a_iᵀ`` (with ``g_i = ∂ℓ_i/∂z_i``), whose squared norm is
      ``‖a_i‖²·‖g_i‖²`` (plus ``‖g_i‖²`` for the bias). One batched forward and one
      backward to the layer outputs give every ``a_i`` and ``g_i``, so the cost is
      a small multiple of one backward pass and no ``N×P`` tensor is formed.
      Available where :func:`grad_norm_method` says ``"ghost"``.
    - ``"materialize"``: each sample's gradient by ``vmap(grad(...))`` as in
      :func:`per_sample_grads`, reduced to its norm inside ``vmap`` (with
      ``chunk_size``, only ``chunk_size·P`` values at a time); any model, and it
      composes with ``torch.func`` transforms (as does the ghost path, built on
      ``torch.func.vjp``).

    Args:
        model, inputs, targets, loss, params, chunk_size: as for
            :func:`per_sample_grads` (``chunk_size`` applies to the materialize path).
        method: ``"auto"`` (ghost where possible), ``"ghost"`` (raise where it is
            not possible) or ``"materialize"``.

    Returns:
        ``(N,)`` norms in the parameters' dtype, detached from the module's own
        parameters and differentiable in tensors passed as ``params``.

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
        return _ghost_norms(model, inputs, targets, loss, setup)
    return _materialized_norms(setup, inputs, targets, chunk_size)


def _materialized_norms(
    setup: Setup, inputs: torch.Tensor, targets: torch.Tensor, chunk_size: Optional[int]
) -> torch.Tensor:
    """Each sample's gradient, reduced to its norm inside ``vmap``.

    With ``chunk_size`` only ``chunk_size·P`` gradient values exist at a time;
    ``vector_norm`` avoids a second ``N×P`` temporary that ``square()`` would make.
    """
    if inputs.shape[0] == 0:
        return targets.new_zeros(0)

    def squared_norm(params: Params, fixed: Params, x: torch.Tensor, y: torch.Tensor):
        grads = grad(setup.sample_loss)(params, fixed, x, y)
        return sum((torch.linalg.vector_norm(g).square() for g in grads.values()),
                   start=y.new_zeros(()))

    in_dims = (None, None, 0, 0)
    squares = vmap(squared_norm, in_dims=in_dims, chunk_size=chunk_size)(
        setup.params, setup.fixed, inputs, targets
    )
    return squares.sqrt()
