"""Per-sample gradients of any lossfn loss, for any model: vmap(grad), or outer products."""

from __future__ import annotations

from typing import Dict, Optional

import torch
from torch.func import grad, vmap

from .._checks import check_choice
from ..losses import mse
from ._setup import Model, Params, Setup, prepare
from ._linear_stack import linear_pass, why_not

__all__ = ["per_sample_grads"]

_METHODS = ("auto", "outer", "vmap")


def _outer(
    model: Model, inputs: torch.Tensor, targets: torch.Tensor, loss: object, setup: Setup
) -> Dict[str, torch.Tensor]:
    """Outer products of each linear layer's inputs and output gradients."""
    done = linear_pass("per_sample_grads", model, inputs, targets, loss, setup)
    found = dict(done.loss_grads)
    for name, a, g in zip(done.names, done.inputs, done.out_grads):
        if name + "weight" in setup.params:  # frozen layers cost nothing
            found[name + "weight"] = g.unsqueeze(-1) * a.unsqueeze(-2)
        found[name + "bias"] = g
    # In the order of setup.params (named_parameters, then the criterion's).
    return {name: found[name] for name in setup.params}


def per_sample_grads(
    model: Model,
    inputs: torch.Tensor,
    targets: torch.Tensor,
    *,
    loss: object = mse,
    params: Optional[Params] = None,
    chunk_size: Optional[int] = None,
    method: str = "auto",
) -> Dict[str, torch.Tensor]:
    r"""The gradient of the loss on each sample alone, for every parameter.

    .. math:: g_i = \nabla_\theta\, \ell\big(f_\theta(x_i),\, y_i\big), \qquad i = 1..N

    Sample ``i`` is run as a batch of one, so a ``"mean"`` loss is that sample's
    loss and ``Σ_i g_i / N`` is the gradient of the usual batch mean. Under the
    Gaussian model (``mse``) ``g_i`` grows with the residual; under the Laplace
    model (``mae``) every sample pulls on the prediction equally hard: this
    function makes that visible for any model. Two exact paths:

    - ``"vmap"``: ``torch.func.vmap(torch.func.grad(...))`` of the one-sample
      loss, for any model; ``chunk_size`` (passed to ``vmap``) bounds the
      intermediate values at ``chunk_size·P``.
    - ``"outer"``: for an ``nn.Sequential`` of ``nn.Linear`` and elementwise
      activations on ``(N, features)`` inputs (where :func:`grad_norm_method`
      says ``"ghost"``), one batched forward and one backward
      (``torch.func.vjp``) give each linear layer's inputs ``a_i`` and output
      gradients ``g_i``, and sample i's weight gradient is the outer product
      ``g_i a_iᵀ``. It writes the ``N×P`` result once, with no per-sample
      matrix products; its intermediates are ``N×width``, so ``chunk_size`` is
      not needed there.

    Args:
        model: an ``nn.Module``, called through ``torch.func.functional_call`` with
            its parameters and buffers (BatchNorm must be in eval mode; dropout
            must be off), or a pure function ``f(params, x)`` with ``params`` given.
        inputs: ``(N, ...)`` model inputs, any dtype.
        targets: ``(N, ...)`` float targets; the model's output for ``inputs`` must
            have exactly this shape.
        loss: a lossfn loss function (default :func:`lossfn.mse`), any
            ``(pred, target) -> scalar`` function, or a criterion module such as
            ``lossfn.nn.HuberLoss()``. A criterion's trainable parameters (the
            ``log_scale`` of ``lossfn.nn.GaussianNLLLoss(learn_scale=True)``) get
            per-sample gradients too, under the key ``"loss.<name>"``.
        params: the tensors to differentiate, name -> tensor. For a module it must
            name every parameter with ``requires_grad`` and nothing else
            (``"loss.<name>"`` keys override a criterion's values); by default the
            module's own trainable parameters, detached. For a function, required.
        chunk_size: number of samples per vectorized chunk, or None for all at
            once (the ``"vmap"`` path).
        method: ``"auto"`` (``"outer"`` where possible, else ``"vmap"``),
            ``"outer"`` (raise where it is not possible) or ``"vmap"``.

    Returns:
        A dict name -> tensor of shape ``(N, *param.shape)``, keyed like
        ``named_parameters()`` (or ``params``), then ``"loss.<name>"`` entries.

    Raises:
        ShapeError: inputs and targets differ in N, or the model's output shape is
            not the targets' shape (e.g. ``(N, 1)`` against ``(N,)``).
        TypeError: integer targets, a non-tensor, or a function model without params.
        KeyError: params missing a trainable parameter, or naming an unknown one.

    Example:
        >>> import torch, lossfn
        >>> model = torch.nn.Linear(1, 1, bias=False)
        >>> with torch.no_grad():
        ...     _ = model.weight.fill_(1.0)
        >>> x = torch.tensor([[1.0], [2.0]])
        >>> y = torch.tensor([[0.0], [2.0]])
        >>> g = lossfn.per_sample_grads(model, x, y)   # d/dw (w·x − y)² = 2(w·x − y)·x
        >>> g["weight"].flatten()
        tensor([2., 0.])

    References:
        torch.func tutorial "Per-sample-gradients"; Goodfellow, "Efficient
        per-example gradient computations" (arXiv:1510.01799, 2015).
    """
    fn = "per_sample_grads"
    check_choice(fn, "method", method, _METHODS)
    setup = prepare(fn, model, inputs, targets, loss, params, chunk_size)
    why = why_not(model, inputs)
    if method == "outer" and why:
        raise ValueError(
            f"{fn}: method='outer' needs an nn.Sequential of nn.Linear and elementwise "
            f"activations on (N, features) inputs, but {why}. Use method='auto'."
        )
    if inputs.shape[0] == 0:
        return {name: p.new_zeros((0, *p.shape)) for name, p in setup.params.items()}
    if method != "vmap" and not why:
        return _outer(model, inputs, targets, loss, setup)
    grads_of = vmap(grad(setup.sample_loss), in_dims=(None, None, 0, 0), chunk_size=chunk_size)
    return grads_of(setup.params, setup.fixed, inputs, targets)
