"""Monte Carlo studies of estimators under noise models: vmapped, chunked, seeded, distributed.

:func:`run` compares location estimators (mean, median, Huber, your own) under a
noise model; :func:`run_regression` compares straight-line fitters. Both return a
:class:`Study` of :class:`Row` records with Monte Carlo standard errors, are
bitwise reproducible from the seed whatever the ``chunk_size``, and split their
work across processes when launched with ``torchrun --nproc_per_node=K``.

Example:
    >>> import lossfn
    >>> from lossfn import montecarlo
    >>> study = montecarlo.run({"mean": "mean", "median": "median"},
    ...                        lossfn.Laplace(1.0), m=25, reps=4000, seed=1)
    >>> bool(study["median"].efficiency > 1)     # the median is the Laplace MLE
    True
"""

from ..mixture import Contaminated as Contaminated
from ._engine import MAX_BLOCK_SIZE as MAX_BLOCK_SIZE
from ._engine import block_seed as block_seed
from ._engine import run as run
from ._estimators import BUILTINS as BUILTINS
from ._estimators import huber as huber
from ._estimators import mean as mean
from ._estimators import median as median
from ._estimators import per_replicate as per_replicate
from ._regression import noise_variance as noise_variance
from ._regression import regression_builtins as regression_builtins
from ._regression import run_regression as run_regression
from ._result import Row as Row
from ._result import Study as Study
from ._stats import Moments as Moments

__all__ = ["run", "run_regression", "noise_variance", "regression_builtins", "Contaminated",
           "Study", "Row", "Moments", "mean", "median", "huber", "per_replicate",
           "BUILTINS", "block_seed", "MAX_BLOCK_SIZE"]
