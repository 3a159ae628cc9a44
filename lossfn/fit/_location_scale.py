"""Location and scale MLEs of a noise model, batched, by name or by model.

One implementation: this dispatches to the noise model's own ``fit``
(:mod:`lossfn.noise`), which uses :mod:`lossfn.location`.
"""

from __future__ import annotations

from typing import Optional, Union

import torch

from ..location import LocationScale
from ..noise import Gaussian, Huber, Laplace, NoiseModel

__all__ = ["location_scale", "NOISE_NAMES"]

#: Noise models known by name, each with its default parameters.
NOISE_NAMES = {"gaussian": Gaussian, "laplace": Laplace, "huber": Huber}


def location_scale(
    samples: torch.Tensor,
    noise: Union[str, NoiseModel],
    *,
    dim: int = -1,
    mask: Optional[torch.Tensor] = None,
) -> LocationScale:
    """Maximum-likelihood location and scale of ``samples`` under a noise model.

    ==========  ==========================  ===================================
    noise       location                    scale
    ==========  ==========================  ===================================
    gaussian    mean                        ``√(mean (x − x̄)²)`` (ddof 0)
    laplace     median (mid-pair average)   ``mean |x − median|``
    huber       Huber M-estimate (δ=1.345)  normalized MAD
    ==========  ==========================  ===================================

    Args:
        samples: data; ``dim`` holds the points, other dims are datasets.
        noise: ``"gaussian"``, ``"laplace"``, ``"huber"`` or a
            :class:`lossfn.NoiseModel` (e.g. ``lossfn.Huber(delta=2.0)``).
        dim: dimension of the points.
        mask: optional bool, broadcastable to ``samples``, True where a point exists.

    Returns:
        ``LocationScale(location, scale)``, each of the batch shape; nan for a
        dataset without points.

    Example:
        >>> import torch
        >>> from lossfn import fit
        >>> x = torch.tensor([[1.0, 2.0, 3.0, 10.0], [0.0, 0.0, 1.0, 1.0]])
        >>> fit.location_scale(x, "gaussian").location
        tensor([4.0000, 0.5000])
        >>> fit.location_scale(x, "laplace")
        LocationScale(location=tensor([2.5000, 0.5000]), scale=tensor([2.5000, 0.5000]))
    """
    if isinstance(noise, str):
        try:
            model = NOISE_NAMES[noise]()
        except KeyError:
            raise ValueError(
                f"location_scale: unknown noise {noise!r}; use one of "
                f"{tuple(NOISE_NAMES)} or a lossfn.NoiseModel instance such as "
                "lossfn.Huber(delta=2.0)."
            ) from None
    elif isinstance(noise, NoiseModel):
        model = noise
    else:
        raise TypeError(
            f"location_scale: noise must be a name {tuple(NOISE_NAMES)} or a "
            f"lossfn.NoiseModel, got {type(noise).__name__}."
        )
    return model.fit(samples, dim=dim, mask=mask)
