"""Native kernels: fused passes over the data, compiled from C on first use.

torch runs a fit's passes one operator at a time: each one reads the data
from memory and writes a temporary back. A kernel that makes every pass over
one dataset while it is in cache reads the data once (``kernels.c``,
``ols.c``, ``huber.c``, ``lad.c``):

* :func:`line_sums`, the centred moments of one predictor and the response
  (``fit.standardized``), and :func:`line_fit`, the same sums and the whole
  ``fit.ols`` record after them (one predictor with an intercept): a whole
  ``fit.ols`` call 2.5-4x faster than the pure-torch route from about 100
  points per dataset, and, accumulated in float64, more accurate in float32,
  where no sum can over- or underflow;
* :func:`ols_fit`, ``fit.ols`` with several predictors: the Gram matrix of
  each dataset in one pass (``kernels.c``), then its solve and the whole
  record, eight datasets to a vector while their Gram matrices are in cache
  (``ols.c``; :func:`ols_record` alone, from given Gram matrices): 4-8x
  faster than the torch route at 1000 datasets of 500 points. Float64
  datasets that one pass does not serve to 12 digits (ill-conditioned
  designs, nearly exact fits) are flagged for CholeskyQR2's second pass,
  which :func:`centred_gram` makes (:mod:`lossfn.fit._solve`);
* :func:`huber` and :func:`lad`, the whole iterations of ``fit.huber`` and
  ``fit.lad`` one dataset at a time (``huber.c``, ``lad.c``, sharing
  ``robust.h``), each stopping when it is done: 4-8x faster than the torch
  route, which runs every dataset of a batch in lockstep for ``max_iter``
  steps.

(``benchmarks/fits.py`` and ``benchmarks/robust.py`` measure them against the
pure-torch route, side by side with the peers.)

The kernels are an accelerator for the plain eager case, never a requirement:
:func:`line_sums`, :func:`line_fit`, :func:`centred_gram`, :func:`ols_fit`,
:func:`ols_record`, :func:`huber` and :func:`lad` return None, and the caller
runs its pure-torch path, whenever the kernels cannot serve the call exactly:

* a ``torch.func`` transform is active (``vmap``, ``grad``, ...), autograd
  must record the call (backward or forward mode), or torch is tracing it
  (``torch.compile``, export, ``torch.jit.trace``): the torch path composes
  with all of them;
* the data are not plain float32/float64 CPU tensors whose batch dims flatten
  to one row stride, with the points contiguous;
* the environment variable ``LOSSFN_NATIVE`` is ``0``;
* no C compiler is available (``$CC``, else ``cc``; ``$CC`` may carry
  arguments, which come after lossfn's own and so win, as in
  ``CC="cc -march=x86-64-v2"``): then a RuntimeWarning says so once per
  process, and everything still works, only slower.

The shared library is built with ``cc -O3 -march=native``
(``-march=native`` dropped if the compiler refuses it) into
``$LOSSFN_CACHE_DIR``, else ``$XDG_CACHE_HOME/lossfn`` (``~/.cache/lossfn``),
else a private ``lossfn-<uid>`` in the temporary directory; its name holds a
hash of the source, the compiler and the CPU, so a changed source or a home
directory shared with another machine never loads a stale or foreign build,
and a checksum written after each build keeps a truncated file (which would
crash the process that loads it) from ever being loaded: it is rebuilt.
Building takes a few seconds, once per machine.
"""
from __future__ import annotations

from ._build import library as _library
from ._calls import enabled
from ._least_squares import MAX_COLUMNS, centred_gram, line_fit, line_sums, ols_fit, ols_record
from ._robust import MAX_COEFFICIENTS, huber, lad

__all__ = ["available", "enabled", "line_sums", "line_fit", "centred_gram", "ols_record", "ols_fit",
           "huber", "lad", "MAX_COLUMNS", "MAX_COEFFICIENTS"]


def available() -> bool:
    """True if the kernels are enabled and built (building them now if needed)."""
    return enabled() and _library() is not None
