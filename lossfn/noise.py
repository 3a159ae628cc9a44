"""Noise models: each ties a regression loss to the density it is the NLL of.

=====================  ==================  =========================  ==============
model                  canonical loss      exact NLL                  location MLE
=====================  ==================  =========================  ==============
``Gaussian(scale)``    :func:`lossfn.mse`  :func:`lossfn.gaussian_nll`  mean
``Laplace(scale)``     :func:`lossfn.mae`  :func:`lossfn.laplace_nll`   median
``Huber(delta, scale)``  :func:`lossfn.huber`  :func:`lossfn.huber_nll`  Huber M-estimate
=====================  ==================  =========================  ==============

The models are immutable. Their parameters are validated once, at
construction (positive scale and delta); the methods are pure and run under
``torch.func`` transforms. Randomness enters only through ``generator``.
"""

from __future__ import annotations

import abc
import functools
import math
from dataclasses import dataclass
from typing import Callable, Optional, Sequence, Union

import torch

from . import location as _location
from ._checks import check_positive
from .losses import huber, mae, mse
from .nll import gaussian_nll, huber_log_normalizer, huber_nll, laplace_nll

__all__ = ["NoiseModel", "Gaussian", "Laplace", "Huber"]

Param = Union[float, torch.Tensor]
Shape = Union[int, Sequence[int], torch.Size]


def _shape(shape: Shape) -> tuple:
    return (shape,) if isinstance(shape, int) else tuple(shape)


def _factory(param: Param, dtype: Optional[torch.dtype], device) -> dict:
    """dtype/device for samples: explicit arguments, else the parameter's, else defaults."""
    if isinstance(param, torch.Tensor):
        return {"dtype": dtype or param.dtype, "device": device or param.device}
    return {"dtype": dtype or torch.get_default_dtype(), "device": device}


def _draw_shape(shape: Shape, *params: Param) -> tuple:
    """``shape`` followed by the broadcast shape of the tensor parameters."""
    extra = torch.broadcast_shapes(*[p.shape for p in params if isinstance(p, torch.Tensor)])
    return _shape(shape) + tuple(extra)


class NoiseModel(abc.ABC):
    """What every noise model offers; subclass it to add one (e.g. a mixture)."""

    name: str = "noise"

    @abc.abstractmethod
    def log_prob(self, residual: torch.Tensor) -> torch.Tensor:
        """``log p(ε)`` elementwise."""

    @abc.abstractmethod
    def sample(self, shape: Shape, *, generator=None, dtype=None, device=None) -> torch.Tensor:
        """Exact independent draws of ``ε``; randomness only from ``generator``."""

    @abc.abstractmethod
    def fit(self, samples, *, dim=-1, mask=None) -> _location.LocationScale:
        """(location, scale) estimates over ``dim``, batched over the other dims."""


@dataclass(frozen=True)
class Gaussian(NoiseModel):
    r"""Gaussian noise ``ε ~ N(0, scale²)``; its NLL is the squared error.

    .. math:: p(\varepsilon) = \frac{1}{\sqrt{2\pi}\sigma}
              \exp\!\left(-\frac{\varepsilon^2}{2\sigma^2}\right)

    Args:
        scale: the standard deviation σ > 0 (float or tensor).

    Example:
        >>> import torch, lossfn
        >>> noise = lossfn.Gaussian(2.0)
        >>> x = noise.sample(100_000, generator=torch.Generator().manual_seed(0))
        >>> round(noise.fit(x).scale.item(), 1)
        2.0
    """

    scale: Param = 1.0
    name = "gaussian"

    def __post_init__(self):
        object.__setattr__(self, "scale", check_positive("Gaussian", "scale", self.scale))

    @property
    def loss(self) -> Callable[..., torch.Tensor]:
        """The canonical loss, :func:`lossfn.mse`."""
        return mse

    def log_prob(self, residual: torch.Tensor) -> torch.Tensor:
        """``log p(ε)`` elementwise."""
        return -gaussian_nll(torch.zeros_like(residual), residual, scale=self.scale, reduction="none")

    def nll(self, pred, target, *, reduction="mean", weight=None):
        """Exact NLL of ``target`` given ``pred``: :func:`lossfn.gaussian_nll`."""
        return gaussian_nll(pred, target, scale=self.scale, reduction=reduction, weight=weight)

    def sample(self, shape: Shape, *, generator=None, dtype=None, device=None) -> torch.Tensor:
        """Draw independent values of shape ``shape + scale.shape``."""
        z = torch.randn(_draw_shape(shape, self.scale), generator=generator,
                        **_factory(self.scale, dtype, device))
        if isinstance(self.scale, float):
            # z is ours: scaling in place spares a pass and a buffer as large as
            # the draw (a Monte Carlo chunk). A tensor scale may be batched under
            # vmap or need autograd, so it gets the out-of-place product.
            return z.mul_(self.scale)
        return z * self.scale

    def fit(self, samples, *, dim=-1, mask=None) -> _location.LocationScale:
        """MLE: mean and σ (ddof 0), see :func:`lossfn.location.gaussian_fit`."""
        return _location.gaussian_fit(samples, dim=dim, mask=mask)

    def to_distribution(self, loc: Param = 0.0) -> torch.distributions.Normal:
        """The equivalent ``torch.distributions.Normal(loc, scale)``."""
        return torch.distributions.Normal(loc, self.scale)

    def location_variance_bound(self, m: int) -> float:
        """Cramér–Rao bound for the location from ``m`` points: ``σ²/m``."""
        return self.scale**2 / m


@dataclass(frozen=True)
class Laplace(NoiseModel):
    r"""Laplace noise with scale ``b``; its NLL is the absolute error.

    .. math:: p(\varepsilon) = \frac{1}{2b}\exp\!\left(-\frac{|\varepsilon|}{b}\right)

    Its variance is ``2b²``; the location MLE is the median.

    Args:
        scale: ``b > 0`` (float or tensor).

    Example:
        >>> import torch, lossfn
        >>> noise = lossfn.Laplace(0.5)
        >>> x = noise.sample(100_000, generator=torch.Generator().manual_seed(0))
        >>> round(noise.fit(x).scale.item(), 2)
        0.5
    """

    scale: Param = 1.0
    name = "laplace"

    def __post_init__(self):
        object.__setattr__(self, "scale", check_positive("Laplace", "scale", self.scale))

    @property
    def loss(self) -> Callable[..., torch.Tensor]:
        """The canonical loss, :func:`lossfn.mae`."""
        return mae

    def log_prob(self, residual: torch.Tensor) -> torch.Tensor:
        """``log p(ε)`` elementwise."""
        return -laplace_nll(torch.zeros_like(residual), residual, scale=self.scale, reduction="none")

    def nll(self, pred, target, *, reduction="mean", weight=None):
        """Exact NLL of ``target`` given ``pred``: :func:`lossfn.laplace_nll`."""
        return laplace_nll(pred, target, scale=self.scale, reduction=reduction, weight=weight)

    def sample(self, shape: Shape, *, generator=None, dtype=None, device=None) -> torch.Tensor:
        """Exact draws of shape ``shape + scale.shape``: ``b·(E₁ − E₂)`` with ``E₁, E₂``
        independent standard exponentials."""
        spec = _factory(self.scale, dtype, device)
        u = torch.rand((2,) + _draw_shape(shape, self.scale), generator=generator, **spec)
        # -log1p(-u) with u in [0, 1) is a finite standard exponential.
        e = -torch.log1p(-u)
        return (e[0] - e[1]) * self.scale

    def fit(self, samples, *, dim=-1, mask=None) -> _location.LocationScale:
        """MLE: median and ``b = mean|x − median|``, see :func:`lossfn.location.laplace_fit`."""
        return _location.laplace_fit(samples, dim=dim, mask=mask)

    def to_distribution(self, loc: Param = 0.0) -> torch.distributions.Laplace:
        """The equivalent ``torch.distributions.Laplace(loc, scale)``."""
        return torch.distributions.Laplace(loc, self.scale)

    def location_variance_bound(self, m: int) -> float:
        """Cramér–Rao bound for the location from ``m`` points: ``b²/m``."""
        return self.scale**2 / m


@dataclass(frozen=True)
class Huber(NoiseModel):
    r"""Huber's least-favourable noise: Gaussian centre, exponential tails.

    .. math:: p(\varepsilon) = \frac{\exp(-\rho_\delta(\varepsilon/s))}{s\,Z(\delta)},\quad
              Z(\delta) = \sqrt{2\pi}\,(2\Phi(\delta)-1) + \frac{2}{\delta}e^{-\delta^2/2}

    Its NLL is :func:`lossfn.huber_nll`; on raw residuals the canonical loss is
    ``huber(…, delta=δ·s)`` because ``ρ_δ(ε/s) = ρ_{δs}(ε)/s²``.

    Args:
        delta: ``δ > 0`` in units of ``scale`` (1.345 gives 95% Gaussian efficiency).
        scale: ``s > 0``.

    Example:
        >>> import torch, lossfn
        >>> noise = lossfn.Huber(1.345)
        >>> round(noise.log_prob(torch.zeros(1)).item(), 6)   # -log Z(1.345)
        -0.978598
    """

    delta: Param = 1.345
    scale: Param = 1.0
    name = "huber"

    def __post_init__(self):
        object.__setattr__(self, "delta", check_positive("Huber", "delta", self.delta))
        object.__setattr__(self, "scale", check_positive("Huber", "scale", self.scale))

    @property
    def loss(self) -> Callable[..., torch.Tensor]:
        """The canonical loss on raw residuals, ``huber(…, delta=δ·s)``."""
        return functools.partial(huber, delta=self.delta * self.scale)

    def log_prob(self, residual: torch.Tensor) -> torch.Tensor:
        """``log p(ε)`` elementwise."""
        return -huber_nll(torch.zeros_like(residual), residual, delta=self.delta,
                          scale=self.scale, reduction="none")

    def nll(self, pred, target, *, reduction="mean", weight=None):
        """Exact NLL of ``target`` given ``pred``: :func:`lossfn.huber_nll`."""
        return huber_nll(pred, target, delta=self.delta, scale=self.scale,
                         reduction=reduction, weight=weight)

    def central_mass(self) -> Param:
        """Probability of ``|ε| ≤ δ·s``: ``√(2π)(2Φ(δ)−1)/Z(δ)``."""
        d = self.delta
        if isinstance(d, torch.Tensor):
            return math.sqrt(2 * math.pi) * torch.erf(d / math.sqrt(2)) / torch.exp(
                huber_log_normalizer(d))
        return math.sqrt(2 * math.pi) * math.erf(d / math.sqrt(2)) / math.exp(
            huber_log_normalizer(d))

    def sample(self, shape: Shape, *, generator=None, dtype=None, device=None) -> torch.Tensor:
        """Exact draws from the two-part mixture the density is.

        With probability :meth:`central_mass` a normal truncated to ``[−δ, δ]``
        (by inversion), otherwise ``±(δ + E/δ)`` with ``E`` standard exponential;
        the result is multiplied by the scale. Shape: ``shape`` followed by the
        broadcast shape of tensor ``delta`` and ``scale``.
        """
        spec = _factory(self.delta if isinstance(self.delta, torch.Tensor) else self.scale,
                        dtype, device)
        u = torch.rand((3,) + _draw_shape(shape, self.delta, self.scale), generator=generator, **spec)
        d = torch.as_tensor(self.delta, **spec)
        half_width = torch.special.ndtr(d) - 0.5
        central = torch.special.ndtri(0.5 + (2 * u[1] - 1) * half_width)
        tail = d - torch.log1p(-u[1]) / d
        sign = torch.where(u[2] < 0.5, -1.0, 1.0).to(spec["dtype"])
        pick_central = u[0] < torch.as_tensor(self.central_mass(), **spec)
        return torch.where(pick_central, central, sign * tail) * self.scale

    def fit(self, samples, *, dim=-1, mask=None) -> _location.LocationScale:
        """Location M-estimate with the normalized MAD as scale (:func:`lossfn.location.huber_location`)."""
        return _location.huber_location(samples, delta=self.delta, dim=dim, mask=mask)

    def to_distribution(self, loc: Param = 0.0) -> None:
        """``torch.distributions`` has no Huber density: returns None."""
        return None

    def location_variance_bound(self, m: int) -> float:
        r"""Cramér–Rao bound ``s²/(m·I)`` with Fisher information ``I = P(|ε| ≤ δs)``.

        For this density the score is ``ψ_δ``, so ``I = E ψ_δ'(ε) = P(|u| ≤ δ)``.
        """
        return self.scale**2 / (m * self.central_mass())
