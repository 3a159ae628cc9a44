"""lossfn: regression losses as the negative log-likelihoods of noise models.

Squared error is the Gaussian NLL, absolute error the Laplace NLL, Huber's loss
the NLL of Huber's density. The functional core (:mod:`lossfn.losses`,
:mod:`lossfn.nll`, :mod:`lossfn.location`) is pure and composes with
``torch.func``; :mod:`lossfn.noise` ties each loss to its density;
:mod:`lossfn.nn` holds thin ``nn.Module`` criteria; :mod:`lossfn.fit` the
batched fits (OLS, the standardized line, location/scale, LAD, Huber).
"""

from . import fit as fit
from . import grads as grads
from . import location as location
from . import montecarlo as montecarlo
from . import nn as nn
from . import select as select
from ._errors import ShapeError as ShapeError
from .grads import Shares as Shares
from .grads import grad_norm_method as grad_norm_method
from .grads import per_sample_grad_norms as per_sample_grad_norms
from .grads import per_sample_grads as per_sample_grads
from .grads import pred_grad as pred_grad
from .grads import shares as shares
from .losses import huber as huber
from .losses import mae as mae
from .losses import mse as mse
from .nll import gaussian_nll as gaussian_nll
from .nll import huber_nll as huber_nll
from .nll import laplace_nll as laplace_nll
from .mixture import Contaminated as Contaminated
from .noise import Gaussian as Gaussian
from .noise import Huber as Huber
from .noise import Laplace as Laplace
from .noise import NoiseModel as NoiseModel

__version__ = "0.1.0"

__all__ = [
    "ShapeError",
    "mse",
    "mae",
    "huber",
    "gaussian_nll",
    "laplace_nll",
    "huber_nll",
    "NoiseModel",
    "Gaussian",
    "Laplace",
    "Huber",
    "per_sample_grads",
    "per_sample_grad_norms",
    "grad_norm_method",
    "pred_grad",
    "Shares",
    "shares",
    "fit",
    "grads",
    "Contaminated",
    "location",
    "montecarlo",
    "nn",
    "select",
]
