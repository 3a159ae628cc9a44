r"""Choosing a loss by choosing a noise model: maximized log-likelihoods and AIC.

Each loss is the NLL of a noise model, so the residuals of a fit can say which
loss suits the data: evaluate their log-likelihood under each model, at that
model's maximum-likelihood location and scale, and prefer the model with the
best information criterion.

=========  =============================  ======================================
model      location, scale                maximized log-likelihood
=========  =============================  ======================================
Gaussian   mean, ``σ² = mean ε²``          ``−n/2·(log 2πσ² + 1)``
Laplace    median, ``b = mean |ε|``        ``−n·(log 2b + 1)``
Huber(δ)   M-estimate, ``s`` solving       ``−Σ ρ_δ(ε/s) − n·log s − n·log Z(δ)``
           ``mean ψ_δ(ε/s)·ε/s = 1``
=========  =============================  ======================================

(``ε`` is measured from the fitted location.) With ``k`` fitted parameters,
``AIC = 2k − 2·loglik``. All functions are batched over leading dimensions,
take a bool ``mask`` for ragged samples, have no Python branches on tensor
values and run under ``torch.func.vmap``. A sample whose scale estimate is zero
or undefined (fewer than two points, all equal) gets nan and ``ok=False``.
"""

from __future__ import annotations

import math
from typing import NamedTuple, Optional, Sequence, Union

import torch

from . import location as _location
from ._checks import check_choice, check_float_tensor, check_mask
from .nll import gaussian_nll, huber_nll, laplace_nll

__all__ = [
    "NOISE_MODELS",
    "LOSS_OF",
    "MaxLogLik",
    "NoiseComparison",
    "huber_scale_mle",
    "max_loglik",
    "aic",
    "compare_noise",
]

#: The noise models compared, in the order of the last axis of :class:`NoiseComparison`.
NOISE_MODELS = ("gaussian", "laplace", "huber")

#: The canonical loss of each noise model.
LOSS_OF = {"gaussian": "mse", "laplace": "mae", "huber": "huber"}

Param = Union[float, torch.Tensor]


class MaxLogLik(NamedTuple):
    """The maximized log-likelihood of one noise model and where it is attained.

    All fields have the batch shape ``...``.
    """

    loglik: torch.Tensor
    location: torch.Tensor
    scale: torch.Tensor
    n: torch.Tensor
    ok: torch.Tensor


class NoiseComparison(NamedTuple):
    """Log-likelihoods and AIC of the residuals under every model of :data:`NOISE_MODELS`.

    ``loglik``, ``aic`` and ``scale`` have shape ``(..., 3)`` (Gaussian, Laplace,
    Huber); ``best`` (``...``, long) indexes the lowest AIC; ``ok`` (``...``,
    bool) is False where any of the three is undefined, and ``best`` is then 0.
    """

    loglik: torch.Tensor
    aic: torch.Tensor
    scale: torch.Tensor
    best: torch.Tensor
    ok: torch.Tensor


def _present(fn: str, residuals: torch.Tensor, mask: Optional[torch.Tensor]) -> torch.Tensor:
    check_float_tensor(fn, "residuals", residuals)
    check_mask(fn, mask, residuals.shape)
    if mask is None:
        return torch.ones_like(residuals, dtype=torch.bool)
    return mask.expand(residuals.shape)


def huber_scale_mle(
    residuals: torch.Tensor,
    *,
    delta: Param = 1.345,
    mask: Optional[torch.Tensor] = None,
) -> torch.Tensor:
    r"""Maximum-likelihood scale of Huber's density for centred residuals, exactly.

    Setting the derivative of ``Σ ρ_δ(ε_i/s) + n log s`` to zero gives

    .. math:: \frac1n \sum_i \min\!\Big(\frac{\varepsilon_i^2}{s^2},\,
              \delta\frac{|\varepsilon_i|}{s}\Big) = 1 ,

    whose left side decreases in ``s``. If the ``k`` smallest ``|ε|`` lie in the
    quadratic zone ``|ε| ≤ δs``, it reads ``A/s² + B/s = 1`` with
    ``A = Σ_{quad} ε²/n`` and ``B = δ Σ_{lin} |ε|/n``, so
    ``s = (B + √(B² + 4A))/2``. Every ``k`` is tried with prefix sums and the one
    consistent with its own zone is kept: no iteration, no data-dependent
    control flow.

    Args:
        residuals: ``(..., m)`` residuals, already centred (location subtracted).
        delta: ``δ > 0``, a float or a tensor broadcastable to the batch ``...``.
        mask: optional ``(..., m)`` bool, the points that exist.

    Returns:
        ``(...)`` the scale ``s``; 0 when every residual is 0, nan with no points.

    Example:
        >>> import torch
        >>> from lossfn.select import huber_scale_mle
        >>> # δ large: all points quadratic, s² = mean ε² = 2.5
        >>> huber_scale_mle(torch.tensor([-2.0, -1.0, 1.0, 2.0], dtype=torch.float64), delta=100.0)
        tensor(1.5811, dtype=torch.float64)
    """
    present = _present("huber_scale_mle", residuals, mask)
    u = torch.where(present, residuals.abs(), math.inf).sort(dim=-1).values
    n = present.sum(-1, keepdim=True).to(u.dtype)
    finite = torch.where(torch.isfinite(u), u, 0.0)
    zero = u.new_zeros(u.shape[:-1] + (1,))
    # k = 0 … m points in the quadratic zone.
    quad = torch.cat([zero, (finite * finite).cumsum(-1)], dim=-1)
    lin_total = finite.sum(-1, keepdim=True)
    lin = lin_total - torch.cat([zero, finite.cumsum(-1)], dim=-1)
    d = torch.as_tensor(delta, dtype=u.dtype, device=u.device)
    d = d.unsqueeze(-1) if d.dim() > 0 else d
    a = quad / n
    b = d * lin / n
    s = (b + (b * b + 4 * a).sqrt()) / 2
    # Consistency of candidate k: u_(k-1) ≤ δs ≤ u_(k); violations are measured
    # and the smallest kept, so rounding at a breakpoint cannot leave no candidate.
    below = torch.cat([zero, u], dim=-1)
    above = torch.cat([u, zero + math.inf], dim=-1)
    k = torch.arange(u.shape[-1] + 1, device=u.device)
    threshold = d * s
    violation = (below - threshold).clamp(min=0) + (threshold - above).clamp(min=0)
    violation = torch.where(k <= n, violation, math.inf)
    pick = violation.argmin(-1, keepdim=True)
    scale = s.gather(-1, pick).squeeze(-1)
    return torch.where(n.squeeze(-1) > 0, scale, math.nan)


#: Coordinate-ascent steps of the joint Huber MLE; each step can only raise the
#: likelihood, and this many leave it flat to ~1e-12 relative on real residuals.
HUBER_JOINT_STEPS = 30


def _huber_joint_mle(r: torch.Tensor, delta: Param, present: torch.Tensor):
    """Joint (location, scale) MLE of Huber's density by exact coordinate ascent.

    Starts from the M-estimate with the normalized MAD; then alternates the exact
    location MLE at fixed scale (:func:`lossfn.location.huber_location`) and the
    exact scale MLE at fixed location (:func:`huber_scale_mle`). A fixed number of
    steps keeps it free of data-dependent control flow.
    """
    location = _location.huber_location(r, delta=delta, mask=present).location
    scale = None
    for step in range(HUBER_JOINT_STEPS + 1):
        if step:
            # A zero scale (perfect fit) would make the band empty: keep the last location.
            usable = torch.where(scale > 0, scale, 1.0)
            moved = _location.huber_location(r, delta=delta, scale=usable, mask=present).location
            location = torch.where(scale > 0, moved, location)
        centred = torch.where(present, r - location.unsqueeze(-1), 0.0)
        scale = huber_scale_mle(centred, delta=delta, mask=present)
    return location, scale


def max_loglik(
    residuals: torch.Tensor,
    *,
    noise: str,
    mask: Optional[torch.Tensor] = None,
    delta: Param = 1.345,
) -> MaxLogLik:
    """Log-likelihood of residuals under one noise model, maximized over location and scale.

    Gaussian and Laplace use the exact joint MLE (:func:`lossfn.location.gaussian_fit`,
    :func:`lossfn.location.laplace_fit`). Huber's joint MLE has no closed form: it
    starts at the M-estimate of location with the normalized MAD, then alternates
    the exact location MLE at fixed scale (:func:`lossfn.location.huber_location`)
    and the exact scale MLE at fixed location (:func:`huber_scale_mle`) for
    ``HUBER_JOINT_STEPS`` steps; each step can only raise the likelihood. The
    value is ``−Σ NLL`` with the exact NLLs of :mod:`lossfn.nll`.

    Args:
        residuals: ``(..., m)`` residuals of a fit.
        noise: ``"gaussian"``, ``"laplace"`` or ``"huber"``.
        mask: optional ``(..., m)`` bool, the points that exist.
        delta: Huber's ``δ`` in units of the scale.

    Returns:
        :class:`MaxLogLik` with fields of shape ``...``; ``ok`` is False (and the
        other fields nan) where the scale is zero or undefined.

    Example:
        >>> import math, torch
        >>> from lossfn.select import max_loglik
        >>> r = torch.tensor([-1.0, 1.0], dtype=torch.float64)  # σ = 1
        >>> bool(torch.isclose(max_loglik(r, noise="gaussian").loglik,
        ...                    torch.tensor(-(math.log(2 * math.pi) + 1), dtype=torch.float64)))
        True
    """
    check_choice("max_loglik", "noise", noise, NOISE_MODELS)
    present = _present("max_loglik", residuals, mask)
    # Padding is never read by the estimators, but it enters the per-element NLL:
    # make it a harmless 0 there and drop it from the sum.
    r = torch.where(present, residuals, 0.0)
    if noise == "gaussian":
        location, scale = _location.gaussian_fit(r, mask=present)
    elif noise == "laplace":
        location, scale = _location.laplace_fit(r, mask=present)
    else:
        location, scale = _huber_joint_mle(r, delta, present)
    n = present.sum(-1)
    ok = (n >= 2) & torch.isfinite(scale) & (scale > 0)
    safe_scale = torch.where(ok, scale, 1.0).unsqueeze(-1)
    pred = location.unsqueeze(-1).expand_as(r)
    pred = torch.where(present, torch.where(ok.unsqueeze(-1), pred, 0.0), 0.0)
    if noise == "gaussian":
        nll = gaussian_nll(pred, r, scale=safe_scale, reduction="none")
    elif noise == "laplace":
        nll = laplace_nll(pred, r, scale=safe_scale, reduction="none")
    else:
        d = torch.as_tensor(delta, dtype=r.dtype, device=r.device)
        d = d.unsqueeze(-1) if d.dim() > 0 else d  # stays a tensor: vmap and grad see it
        nll = huber_nll(pred, r, delta=d, scale=safe_scale, reduction="none")
    loglik = -torch.where(present, nll, 0.0).sum(-1)
    nan = torch.full_like(loglik, math.nan)
    return MaxLogLik(
        loglik=torch.where(ok, loglik, nan),
        location=torch.where(ok, location, nan),
        scale=torch.where(ok, scale, nan),
        n=n,
        ok=ok,
    )


def aic(loglik: torch.Tensor, k: Union[int, torch.Tensor]) -> torch.Tensor:
    """Akaike's information criterion ``2k − 2·loglik``; lower is better.

    Example:
        >>> import torch
        >>> from lossfn.select import aic
        >>> aic(torch.tensor([-10.0, -12.0]), 3)
        tensor([26., 30.])
    """
    return 2 * k - 2 * loglik


def compare_noise(
    residuals: Union[torch.Tensor, Sequence[torch.Tensor]],
    *,
    mask: Optional[torch.Tensor] = None,
    delta: Param = 1.345,
    n_params: int = 2,
) -> NoiseComparison:
    """Rank the Gaussian, Laplace and Huber models of the residuals by AIC.

    Each model is scored on the residuals of the fit it implies: pass one
    tensor to score the same residuals under all three, or a sequence of three
    ``(..., m)`` tensors — the residuals of the OLS, LAD and Huber fits, in the
    order of :data:`NOISE_MODELS`. Every model has ``k = n_params + 1``
    parameters (the fit's, plus the scale; the location of the residuals is
    absorbed by an intercept), so the AIC ranks them as the log-likelihood
    does; it is reported for comparison with models of other sizes.

    Args:
        residuals: ``(..., m)`` tensor, or three of them.
        mask: optional ``(..., m)`` bool, the points that exist.
        delta: Huber's ``δ`` in units of the scale.
        n_params: parameters of the fit that produced the residuals (2 for a line).

    Returns:
        :class:`NoiseComparison`. ``LOSS_OF[NOISE_MODELS[best]]`` is the loss to use.

    Example:
        >>> import torch
        >>> from lossfn import Laplace
        >>> from lossfn.select import NOISE_MODELS, compare_noise
        >>> r = Laplace(1.0).sample(2000, generator=torch.Generator().manual_seed(0))
        >>> NOISE_MODELS[compare_noise(r).best]
        'laplace'
    """
    if isinstance(residuals, torch.Tensor):
        residuals = (residuals,) * len(NOISE_MODELS)
    if len(residuals) != len(NOISE_MODELS):
        raise ValueError(
            f"compare_noise: give one residual tensor or {len(NOISE_MODELS)} "
            f"(one per model of {NOISE_MODELS}), got {len(residuals)}."
        )
    fits = [
        max_loglik(r, noise=name, mask=mask, delta=delta)
        for r, name in zip(residuals, NOISE_MODELS)
    ]
    loglik = torch.stack([f.loglik for f in fits], dim=-1)
    scale = torch.stack([f.scale for f in fits], dim=-1)
    criterion = aic(loglik, n_params + 1)
    ok = torch.stack([f.ok for f in fits], dim=-1).all(-1)
    best = torch.where(ok, torch.where(ok.unsqueeze(-1), criterion, 0.0).argmin(-1), 0)
    return NoiseComparison(loglik=loglik, aic=criterion, scale=scale, best=best, ok=ok)
