"""Shared plumbing of the per-sample gradient functions: checks, parameters, one sample's loss.

A model is either an ``nn.Module`` (called through ``torch.func.functional_call``
with its parameters and buffers) or a pure function ``f(params, x)``. A loss is a
lossfn loss function, any ``(pred, target) -> scalar`` callable, or a criterion
module; a criterion's trainable parameters (``log_scale`` of an NLL criterion with
``learn_scale=True``) join the differentiated dict under the key ``"loss.<name>"``.
"""

from __future__ import annotations

from typing import Callable, Dict, NamedTuple, Optional, Union

import torch
from torch import nn
from torch.func import functional_call

from .._checks import check_float_tensor, squeeze_hint
from .._errors import ShapeError

__all__ = ["LOSS_PREFIX", "Setup", "prepare", "check_output"]

#: Prefix of a criterion's parameters in the dict of differentiated tensors.
LOSS_PREFIX = "loss."

Params = Dict[str, torch.Tensor]
Model = Union[nn.Module, Callable[[Params, torch.Tensor], torch.Tensor]]


class ParamsKeyError(KeyError):
    """A name missing from (or unknown to) ``params``; prints its message plainly."""

    def __str__(self) -> str:
        return str(self.args[0])


class Setup(NamedTuple):
    """What the gradient functions need, resolved once outside any transform."""

    params: Params  # differentiated: the model's, then "loss.<name>" of the criterion
    fixed: Params  # held constant: buffers and frozen parameters of a module
    call_loss: Callable[[Params, torch.Tensor, torch.Tensor], torch.Tensor]
    sample_loss: Callable[[Params, Params, torch.Tensor, torch.Tensor], torch.Tensor]


def check_output(fn: str, out_shape: torch.Size, target_shape: torch.Size) -> None:
    """The model's output must have the targets' shape (both for the whole batch)."""
    if out_shape != target_shape:
        raise ShapeError(
            f"{fn}: the model's output has shape {tuple(out_shape)} but targets have "
            f"shape {tuple(target_shape)}; they must be equal (sample i's output is "
            f"compared with targets[i]). Fix: {squeeze_hint(out_shape, target_shape, names=('output', 'targets'))} "
            "For a model that ends in nn.Linear(k, 1), pass targets.unsqueeze(-1) or "
            "squeeze the model's output."
        )


def _check_data(fn: str, inputs: object, targets: object) -> None:
    if not isinstance(inputs, torch.Tensor):
        raise TypeError(f"{fn}: inputs must be a torch.Tensor, got {type(inputs).__name__}.")
    check_float_tensor(fn, "targets", targets)
    if inputs.dim() == 0 or targets.dim() == 0:
        raise ShapeError(
            f"{fn}: inputs {tuple(inputs.shape)} and targets {tuple(targets.shape)} "
            "need a leading sample dimension N."
        )
    if inputs.shape[0] != targets.shape[0]:
        raise ShapeError(
            f"{fn}: inputs and targets must hold the same number of samples N along "
            f"dim 0, got inputs {tuple(inputs.shape)} (N={inputs.shape[0]}) and targets "
            f"{tuple(targets.shape)} (N={targets.shape[0]}). Pass matching slices."
        )


def _check_params(fn: str, params: object) -> Params:
    if not isinstance(params, dict):
        raise TypeError(
            f"{fn}: params must be a dict name -> tensor, got {type(params).__name__}. "
            "For a module use dict(model.named_parameters())."
        )
    for name, value in params.items():
        check_float_tensor(fn, f"params[{name!r}]", value)
    return params


def _module_params(fn: str, model: nn.Module, params: Optional[Params]):
    """Split a module's tensors into differentiated ones and constants."""
    if any(
        isinstance(m, nn.modules.batchnorm._BatchNorm) and m.training for m in model.modules()
    ):
        raise ValueError(
            f"{fn}: the model has BatchNorm in training mode, which mixes the samples "
            "of a batch, so a sample's own gradient is not defined. Call model.eval() "
            "(BatchNorm then uses its running statistics, which are passed as buffers)."
        )
    if any(
        isinstance(m, nn.modules.dropout._DropoutNd) and m.training and m.p > 0
        for m in model.modules()
    ):
        raise ValueError(
            f"{fn}: the model has Dropout in training mode, which would draw its masks "
            "from the global RNG inside vmap. Call model.eval() (or set p=0)."
        )
    named = dict(model.named_parameters())
    clash = [name for name in named if name.startswith(LOSS_PREFIX)]
    if clash:
        raise ValueError(
            f"{fn}: model parameter names {clash} start with {LOSS_PREFIX!r}, which is "
            "reserved for the criterion's parameters. Rename the submodule."
        )
    trainable = {name for name, p in named.items() if p.requires_grad}
    if params is None:
        chosen = {name: named[name].detach() for name in named if name in trainable}
    else:
        chosen = {k: v for k, v in params.items() if not k.startswith(LOSS_PREFIX)}
        missing = sorted(trainable - chosen.keys())
        unknown = sorted(chosen.keys() - named.keys())
        if missing or unknown:
            raise ParamsKeyError(
                f"{fn}: params must name every trainable parameter of the model and "
                f"nothing else; missing {missing}, unknown {unknown}. The model has "
                f"{sorted(named)}. Freeze a parameter with requires_grad_(False) to "
                "leave it out."
            )
    fixed = {name: p.detach() for name, p in named.items() if name not in chosen}
    fixed.update({name: b for name, b in model.named_buffers()})
    return chosen, fixed


def _loss_params(fn: str, loss: object, params: Optional[Params]) -> Params:
    own = (
        {n: p for n, p in loss.named_parameters() if p.requires_grad}
        if isinstance(loss, nn.Module)
        else {}
    )
    given = {} if params is None else {
        k[len(LOSS_PREFIX):]: v for k, v in params.items() if k.startswith(LOSS_PREFIX)
    }
    unknown = sorted(given.keys() - own.keys())
    if unknown:
        raise ParamsKeyError(
            f"{fn}: params has {[LOSS_PREFIX + k for k in unknown]}, but the loss has no "
            f"trainable parameter of that name (it has {sorted(own)})."
        )
    return {
        LOSS_PREFIX + name: given[name] if name in given else p.detach()
        for name, p in own.items()
    }


def _model_caller(fn: str, model: Model):
    if isinstance(model, nn.Module):
        def call(params: Params, fixed: Params, x: torch.Tensor) -> torch.Tensor:
            return functional_call(model, (params, fixed), (x,))
        return call

    def call_function(params: Params, fixed: Params, x: torch.Tensor) -> torch.Tensor:
        try:
            return model(params, x)
        except KeyError as err:
            name = err.args[0] if err.args else None
            if name in params:
                raise
            raise ParamsKeyError(
                f"{fn}: the model function looked up params[{name!r}], which params "
                f"lacks; it has {sorted(params)}. Add the missing tensor to params."
            ) from err
    return call_function


def _loss_caller(fn: str, loss: object):
    if not callable(loss):
        raise TypeError(
            f"{fn}: loss must be a loss function such as lossfn.mse or a criterion "
            f"module such as lossfn.nn.HuberLoss(), got {type(loss).__name__}."
        )

    def call(loss_params: Params, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        if isinstance(loss, nn.Module):
            own = {k[len(LOSS_PREFIX):]: v for k, v in loss_params.items()}
            value = functional_call(loss, own, (pred, target))
        else:
            value = loss(pred, target)
        if not isinstance(value, torch.Tensor) or value.dim() != 0:
            shape = tuple(value.shape) if isinstance(value, torch.Tensor) else type(value)
            raise ValueError(
                f"{fn}: the loss must return a scalar for one sample, got {shape}. "
                "Use reduction='mean' or 'sum', not 'none'."
            )
        return value
    return call


def prepare(
    fn: str,
    model: Model,
    inputs: torch.Tensor,
    targets: torch.Tensor,
    loss: object,
    params: Optional[Params],
    chunk_size: Optional[int],
) -> Setup:
    """Validate the arguments and build the one-sample loss ``(params, fixed, x, y) -> ℓ``."""
    _check_data(fn, inputs, targets)
    if chunk_size is not None and (
        isinstance(chunk_size, bool) or not isinstance(chunk_size, int) or chunk_size < 1
    ):
        raise ValueError(f"{fn}: chunk_size must be None or an int >= 1, got {chunk_size!r}.")
    if params is not None:
        params = _check_params(fn, params)
    if isinstance(model, nn.Module):
        model_params, fixed = _module_params(fn, model, params)
    elif callable(model):
        if params is None:
            raise TypeError(
                f"{fn}: model is a function f(params, x), so params= (a dict name -> "
                "tensor) is required."
            )
        model_params = {k: v for k, v in params.items() if not k.startswith(LOSS_PREFIX)}
        fixed = {}
    else:
        raise TypeError(
            f"{fn}: model must be an nn.Module or a function f(params, x), got "
            f"{type(model).__name__}."
        )
    all_params = {**model_params, **_loss_params(fn, loss, params)}
    call_model = _model_caller(fn, model)
    call_loss = _loss_caller(fn, loss)
    n = targets.shape[0]

    def sample_loss(params: Params, fixed: Params, x: torch.Tensor, y: torch.Tensor):
        # Each sample is a batch of one, so a "mean" loss is that sample's loss.
        model_part = {k: v for k, v in params.items() if not k.startswith(LOSS_PREFIX)}
        loss_part = {k: v for k, v in params.items() if k.startswith(LOSS_PREFIX)}
        pred = call_model(model_part, fixed, x.unsqueeze(0))
        target = y.unsqueeze(0)
        if pred.shape != target.shape:
            check_output(fn, torch.Size((n, *pred.shape[1:])), torch.Size((n, *target.shape[1:])))
        return call_loss(loss_part, pred, target)

    return Setup(all_params, fixed, call_loss, sample_loss)
