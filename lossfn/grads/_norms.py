"""Per-sample gradient norms, exact, without materializing N×P gradients where possible."""

from __future__ import annotations

import math
from typing import Optional

import torch
from torch import nn
from torch.func import grad, vmap

from .._checks import check_choice
from ..losses import mse
from ._setup import Model, Params, Setup, prepare
from ._linear_stack import grad_norm_method, linear_pass, why_not

__all__ = ["per_sample_grad_norms", "grad_norm_method"]

_METHODS = ("auto", "ghost", "materialize")


def _ghost_norms(
    model: nn.Module, inputs: torch.Tensor, targets: torch.Tensor, loss: object, setup: Setup
) -> torch.Tensor:
    """One forward, one backward to the linear outputs, then ‖a‖²·‖g‖² per layer."""
    done = linear_pass("per_sample_grad_norms", model, inputs, targets, loss, setup)
    sq = done.out_grads[0].new_zeros(inputs.shape[0])
    for name, a, g in zip(done.names, done.inputs, done.out_grads):
        g_sq = g.square().sum(-1)
        if name + "weight" in setup.params:
            # Sample i's weight gradient is g aᵀ, and ‖g aᵀ‖²_F = ‖a‖²·‖g‖².
            sq = sq + a.square().sum(-1) * g_sq
        if name + "bias" in setup.params:
            sq = sq + g_sq
    for value in done.loss_grads.values():
        sq = sq + _row_square_sums(value)
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
    check_choice(fn, "method", method, _METHODS)
    setup = prepare(fn, model, inputs, targets, loss, params, chunk_size)
    why = why_not(model, inputs)
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
