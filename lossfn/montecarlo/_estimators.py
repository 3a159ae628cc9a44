"""Built-in location estimators and the rule that decides whether to vmap a user's one.

An estimator maps samples ``(..., m)`` to estimates ``(...)``. A function written
for one replicate, ``(m,) → ()``, is accepted too and run under
:func:`torch.func.vmap`. Which of the two a function is, is decided once per study
by a probe: the function is called on a batch of two replicates ``(2, m)``;
an output of shape ``(2,)`` means batched, a scalar output or an exception means
one-replicate (then ``vmap(fn)`` must give ``(2,)``, or the study stops with an
error naming the estimator). Mark a function with :func:`per_replicate` to skip
the probe, e.g. when calling it on a batch would be expensive or misleading.
"""

from __future__ import annotations

import functools
from typing import Callable, Mapping, Optional, Union

import torch

from .. import location as _location
from .._errors import ShapeError

__all__ = ["mean", "median", "huber", "per_replicate", "BUILTINS"]

Estimator = Callable[[torch.Tensor], torch.Tensor]

#: Values per tile of replicates in :func:`mean`: its second pass needs a
#: temporary as large as its input, which on a whole chunk would double the
#: engine's peak memory; on tiles of 1 MiB (float32) it stays small and in cache.
TILE_ELEMENTS = 1 << 18


def _in_tiles(fn: Estimator, samples: torch.Tensor) -> torch.Tensor:
    """``fn`` over tiles of rows of ``samples`` ``(..., m)``; the same as ``fn(samples)``
    for a row-wise ``fn``, with the working memory of one tile."""
    m = samples.shape[-1]
    rows = samples.reshape(-1, m)
    step = max(1, TILE_ELEMENTS // max(m, 1))
    if rows.shape[0] <= step:
        return fn(samples)
    return torch.cat([fn(tile) for tile in rows.split(step)]).reshape(samples.shape[:-1])


def mean(samples: torch.Tensor) -> torch.Tensor:
    """Sample mean over the last dim: the Gaussian location MLE (:func:`lossfn.location.mean`).

    Computed on tiles of rows (bitwise the same, a fraction of the memory).
    """
    return _in_tiles(_location.mean, samples)


def median(samples: torch.Tensor) -> torch.Tensor:
    """Sample median over the last dim: the Laplace location MLE (:func:`lossfn.location.median`)."""
    return _location.median(samples)


def huber(*, delta: float = 1.345, scale: Optional[float] = None) -> Estimator:
    """Huber's M-estimate of location with threshold ``delta`` (in units of the scale).

    ``scale=None`` estimates the scale of each replicate by the normalized MAD;
    a number is a known scale. δ = 1.345 with known scale has 95% asymptotic
    efficiency at the Gaussian (Huber 1964).

    Example:
        >>> import torch
        >>> from lossfn import montecarlo
        >>> montecarlo.huber(delta=1.0, scale=1.0)(torch.tensor([[-1.0, 0.0, 1.0, 50.0]]))
        tensor([0.5000])
    """

    def estimate(samples: torch.Tensor) -> torch.Tensor:
        return _location.huber_location(samples, delta=delta, scale=scale).location

    estimate.__name__ = f"huber(delta={delta}, scale={scale})"
    return estimate


#: Names accepted in place of a function in ``estimators``.
BUILTINS: Mapping[str, Estimator] = {"mean": mean, "median": median, "huber": huber()}


def per_replicate(fn: Callable) -> Callable:
    """Mark ``fn`` as written for one replicate, so the engine vmaps it without probing.

    Example:
        >>> import torch
        >>> from lossfn import montecarlo
        >>> midrange = montecarlo.per_replicate(lambda x: (x.max() + x.min()) / 2)
        >>> midrange.per_replicate
        True
    """

    @functools.wraps(fn)
    def wrapped(*args):
        return fn(*args)

    wrapped.per_replicate = True
    return wrapped


def resolve(fn: Union[str, Callable], name: str, builtins: Mapping[str, Callable]) -> Callable:
    """A callable for ``fn``, looking strings up in ``builtins``."""
    if isinstance(fn, str):
        if fn not in builtins:
            raise ValueError(
                f"montecarlo: unknown built-in {fn!r} for {name!r}; the built-ins are "
                f"{sorted(builtins)}. Pass a function instead for anything else."
            )
        return builtins[fn]
    if not callable(fn):
        raise TypeError(
            f"montecarlo: {name!r} must be a function or the name of a built-in "
            f"{sorted(builtins)}, got {type(fn).__name__}"
        )
    return fn


def batched(fn: Callable, name: str, probe: tuple, in_dims: tuple) -> Callable:
    """``fn`` itself if it is batched, else ``vmap(fn, in_dims)``; see the module doc.

    ``probe`` holds the arguments of a two-replicate call; ``in_dims`` says which
    of them carry the replicate dimension (as for :func:`torch.func.vmap`).
    """
    vmapped = torch.func.vmap(fn, in_dims=in_dims)
    if getattr(fn, "per_replicate", False):
        return vmapped
    try:
        out = fn(*probe)
        shape = tuple(out.shape) if isinstance(out, torch.Tensor) else None
    except Exception:  # a one-replicate function may fail on a batch: try vmap below
        shape = ()
    if shape == (2,):
        return fn
    if shape == ():
        try:
            out = vmapped(*probe)
        except Exception as error:
            raise ValueError(
                f"montecarlo: estimator {name!r} neither maps a batch (2, m) to (2,) nor "
                f"runs under torch.func.vmap as a one-replicate function (m,) -> (); "
                f"vmap raised: {error}"
            ) from error
        if tuple(out.shape) == (2,):
            return vmapped
        shape = tuple(out.shape)
    raise ShapeError(
        f"montecarlo: estimator {name!r} must map samples (..., m) to (...) or one "
        f"replicate (m,) to a scalar; on a batch of 2 replicates it returned shape "
        f"{shape}. Reduce the last dim (e.g. x.mean(-1)), or wrap a one-replicate "
        f"function with montecarlo.per_replicate."
    )
