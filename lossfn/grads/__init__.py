"""Per-sample gradients and outlier diagnostics, on ``torch.func``.

The source text's point about gradients, made measurable: under the Gaussian
model (mse) a point's gradient grows with its residual, under the Laplace model
(mae) every point pulls equally hard.

- :func:`per_sample_grads`: each sample's gradient for any model and loss
  (``vmap(grad)``, or outer products from one backward for stacks of linear layers).
- :func:`per_sample_grad_norms`: their norms, without forming ``N×P`` tensors for
  stacks of linear layers (:func:`grad_norm_method` says which path is taken).

Sample i's loss is the loss on a batch of one; a criterion's trainable
parameters (``log_scale`` with ``learn_scale=True``) get per-sample gradients
under the key ``"loss.<name>"``.
- :func:`pred_grad`: ``∂L/∂ŷ`` of mse, mae and huber in closed form.
- :func:`shares`: each point's share of the loss and of the gradient.
"""

from ._norms import grad_norm_method as grad_norm_method
from ._norms import per_sample_grad_norms as per_sample_grad_norms
from ._persample import per_sample_grads as per_sample_grads
from ._pred_grad import LOSS_NAMES as LOSS_NAMES
from ._pred_grad import pred_grad as pred_grad
from ._shares import Shares as Shares
from ._shares import shares as shares

__all__ = [
    "per_sample_grads",
    "per_sample_grad_norms",
    "grad_norm_method",
    "pred_grad",
    "LOSS_NAMES",
    "Shares",
    "shares",
]
