"""Batched fits: least squares, the standardized line, location/scale, LAD, Huber.

Each fit is a maximum-likelihood estimate under a noise model (OLS under
Gaussian noise, LAD under Laplace noise, Huber's M-estimate under Huber's
noise), computed for a whole batch of datasets in one call: leading
dimensions are datasets, results are NamedTuples with one entry per dataset
and an ``ok`` flag for degenerate ones. Everything runs under
``torch.func.vmap``.

Speed. On the CPU, :func:`ols` (one predictor with an intercept, or several
predictors), :func:`standardized`, :func:`lad` and :func:`huber` run native
kernels that pass over each dataset while it is in cache
(:mod:`lossfn._native`). For least squares they accumulate in float64 and
compute the whole record in C (with several float64 predictors, for the
datasets that one pass serves to 12 digits; the others get CholeskyQR2's
second pass): 2-8x faster end to end than the pure-torch route, and accurate
to float64 rounding where float32 sums would over- or underflow. LAD and
Huber regression run their whole iteration per dataset in C, each dataset
stopping when it is done: 4-8x faster (B = 1000, m = 200). They are
compiled with the system's C compiler (``$CC``, else ``cc``) on first use, a
few seconds, into ``~/.cache/lossfn``. Calls they cannot serve (under
``torch.func`` transforms or autograd, off the CPU) take the pure-torch route,
which gives the same fits to rounding, except float32 data so far out of
range that float32 sums over- or underflow, which it reports as not ok (see
:class:`OLSFit`); so does every call where ``LOSSFN_NATIVE=0`` is set or no
compiler is found (one RuntimeWarning then says so).
"""

from ._huber import HuberFit as HuberFit
from ._huber import huber as huber
from ._lad import LADFit as LADFit
from ._lad import lad as lad
from ._location_scale import location_scale as location_scale
from ._ols import OLSFit as OLSFit
from ._ols import ols as ols
from ._standardized import Standardized as Standardized
from ._standardized import standardized as standardized

__all__ = [
    "OLSFit",
    "ols",
    "Standardized",
    "standardized",
    "location_scale",
    "LADFit",
    "lad",
    "HuberFit",
    "huber",
]
