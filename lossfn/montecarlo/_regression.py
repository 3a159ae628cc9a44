r"""Monte Carlo studies of straight-line fitters: OLS against LAD against Huber.

Each replicate is ``y = α + β·x + ε`` on a fixed design ``x`` with ``m`` i.i.d.
draws ``ε`` from the noise model; each fitter returns its slope. The reference
variance is that of the OLS slope, ``Var(ε)/Σ(x − x̄)²`` (Gauss–Markov; under
Gaussian noise it is also the Cramér–Rao bound).
"""

from __future__ import annotations

import math
from typing import Callable, Mapping, Optional, Union

import torch

from ..noise import Gaussian, Huber, Laplace, NoiseModel
from ._engine import (check_common, check_names, check_noise, make_evaluate, resolve_device,
                      simulate)
from ._estimators import batched, resolve
from ._result import Study, rows_from
from ._stats import summarize

__all__ = ["run_regression", "noise_variance", "regression_builtins"]


def noise_variance(noise: NoiseModel) -> Optional[float]:
    r"""``Var ε`` of a noise model with scalar parameters, or None where unknown.

    Gaussian ``σ²``; Laplace ``2b²``; Huber
    ``s²·[√(2π)(2Φ(δ) − 1) + 4e^{−δ²/2}(1/δ + 1/δ³)]/Z(δ)`` (the central part
    ``∫_{|u|≤δ} u² e^{−u²/2}`` plus the two exponential tails); otherwise the
    model's own ``variance()`` if it has one (e.g. :class:`lossfn.Contaminated`).

    Example:
        >>> import lossfn
        >>> from lossfn.montecarlo import noise_variance
        >>> noise_variance(lossfn.Laplace(1.5))
        4.5
    """
    if isinstance(noise, Gaussian):
        return float(noise.scale) ** 2
    if isinstance(noise, Laplace):
        return 2.0 * float(noise.scale) ** 2
    if isinstance(noise, Huber):
        d, s = float(noise.delta), float(noise.scale)
        centre = math.sqrt(2 * math.pi) * math.erf(d / math.sqrt(2))
        z = centre + 2 / d * math.exp(-d * d / 2)
        return s * s * (centre + 4 * math.exp(-d * d / 2) * (1 / d + 1 / d**3)) / z
    variance = getattr(noise, "variance", None)
    if variance is None:
        return None
    value = variance()
    return float(value) if not isinstance(value, torch.Tensor) or value.numel() == 1 else None


def regression_builtins() -> Mapping[str, Callable]:
    """Fitters ``"ols"``, ``"lad"``, ``"huber"`` from :mod:`lossfn.fit`, where it has them."""
    try:
        from .. import fit
    except ImportError:
        return {}
    found = {}
    for name in ("ols", "lad", "huber"):
        function = getattr(fit, name, None)
        if function is not None:
            found[name] = (lambda f: lambda x, y: f(x, y).slope)(function)
    return found


def run_regression(fitters: Mapping[str, Union[str, Callable]], noise: NoiseModel,
                   x: torch.Tensor, *, reps: int, beta: float = 1.0, alpha: float = 0.0,
                   seed: int = 0, chunk_size: int = 100_000, block_size: int = 8192,
                   dtype: torch.dtype = torch.float64, device=None,
                   progress: Union[bool, str] = False,
                   reference: Optional[str] = None) -> Study:
    r"""Monte Carlo study of the slope of straight-line fitters under a noise model.

    Args:
        fitters: name → ``fn(x, y)`` with ``x, y`` of shape ``(..., m)`` returning
            the slopes ``(...)``, or a one-replicate ``fn(x (m,), y (m,)) → ()``
            (vmapped), or a built-in name from :func:`regression_builtins`
            (``"ols"``, and ``"lad"``, ``"huber"`` where :mod:`lossfn.fit` has them).
        noise: a :class:`lossfn.noise.NoiseModel` with scalar parameters.
        x: the fixed design, shape ``(m,)``, not constant.
        reps: number of replicates (≥ 2).
        beta, alpha: true slope and intercept; ``truth`` of the study is ``beta``.
        seed, chunk_size, block_size, dtype, device, progress, reference: as in
            :func:`lossfn.montecarlo.run`; ``device=None`` also follows ``x`` off the CPU.

    Returns:
        A :class:`Study` whose ``bound`` is the OLS slope variance
        ``Var(ε)/Σ(x − x̄)²`` (None if the noise variance is unknown).

    Example:
        >>> import torch, lossfn
        >>> from lossfn import montecarlo
        >>> def ols(x, y):
        ...     xc = x - x.mean(-1, keepdim=True)
        ...     return (xc * y).sum(-1) / (xc * xc).sum(-1)
        >>> x = torch.linspace(0, 1, 10, dtype=torch.float64)
        >>> study = montecarlo.run_regression({"ols": ols}, lossfn.Gaussian(1.0), x, reps=20_000)
        >>> round(study["ols"].variance.item() / study.bound, 1)
        1.0
    """
    check_common(reps, seed, chunk_size, block_size, dtype)
    check_noise("run_regression", noise)
    if not isinstance(x, torch.Tensor) or x.dim() != 1 or x.shape[0] < 2:
        got = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
        raise ValueError(f"montecarlo.run_regression: x must be a 1-d tensor (m,) with m >= 2 "
                         f"points, got {got}. Give the design of one replicate; it is shared.")
    names, ref = check_names("fitters", fitters, reference)
    if device is None and x.device.type != "cpu":
        device = x.device  # a design on the GPU means a study on the GPU
    device = resolve_device(noise, device)
    design = x.to(dtype=dtype, device=device)
    m = design.shape[0]
    sxx = float(((design.double() - design.double().mean()) ** 2).sum())
    if not sxx > 0:
        raise ValueError("montecarlo.run_regression: x is constant, so the slope is not "
                         "identified; use a design with at least two distinct values.")
    builtins = regression_builtins()
    probe_y = torch.stack([design.flip(0), design * 0.5 + 1.0])
    functions = [batched(resolve(fitters[n], n, builtins), n, (design.expand(2, m), probe_y),
                         (0, 0)) for n in names]
    line = alpha + beta * design

    def draw(n: int, generator: torch.Generator) -> torch.Tensor:
        eps = noise.sample((n, m), generator=generator, dtype=dtype, device=device)
        if eps.shape != (n, m):
            raise ValueError(f"montecarlo.run_regression: {noise!r} draws shape "
                             f"{tuple(eps.shape)} for ({n}, {m}); scalar parameters needed")
        return line + eps

    evaluate = make_evaluate(functions, names, float(beta),
                             lambda fn, y: fn(design.expand(y.shape[0], m), y))
    moments = simulate(draw, evaluate, len(names), reps=reps, seed=seed, chunk_size=chunk_size,
                       block_size=block_size, device=device, progress=progress)
    variance = noise_variance(noise)
    bound = None if variance is None else variance / sxx
    return Study(rows_from(summarize(moments, ref), names, float(beta), bound),
                 reference=names[ref], reps=reps, m=m, truth=float(beta), seed=seed,
                 block_size=block_size, noise=noise, bound=bound,
                 bound_label="OLS slope variance Var(ε)/Σ(x − x̄)²", moments=moments)
