"""``lossfn simulate``: the Monte Carlo efficiency table of the location estimators.

A thin front over :func:`lossfn.montecarlo.run`: the mean (Gaussian MLE), the
median (Laplace MLE) and Huber's M-estimate (δ = 1.345, MAD scale), each drawn
``reps`` times from samples of ``m`` points of every chosen noise model: Gaussian,
Laplace, Huber (δ = 1.345) and the contaminated normal 0.9·N(0, 1) + 0.1·N(0, 3²).
"""

from __future__ import annotations

import math
from typing import Dict, List, Sequence

from ..mixture import Contaminated
from ..noise import Gaussian, Huber, Laplace

__all__ = ["ESTIMATORS", "COLUMNS", "noise_model", "efficiency_table", "format_rows"]

#: The built-in estimators of :func:`lossfn.montecarlo.run`, the mean first (the reference).
ESTIMATORS = {"mean": "mean", "median": "median", "huber": "huber"}

#: The fields of :class:`lossfn.montecarlo.Row` shown in the table.
COLUMNS = ("bias", "variance", "variance_se", "mse", "efficiency", "efficiency_se", "bound_ratio")


def noise_model(name: str):
    """The noise model behind a ``--noise`` choice (unit scale)."""
    if name == "gaussian":
        return Gaussian(1.0)
    if name == "laplace":
        return Laplace(1.0)
    if name == "huber":
        return Huber(1.345)
    # Tukey's contaminated normal, 0.9·N(0, 1) + 0.1·N(0, 3²): the textbook case
    # where the mean loses to the median.
    return Contaminated(eps=0.1, k=3.0)


def _float(value) -> float:
    v = float(value)
    return v if math.isfinite(v) else None


def efficiency_table(
    noises: Sequence[str], *, m: int, reps: int, seed: int = 0, progress: bool = False
) -> List[Dict]:
    """One row per (noise, estimator) with the :data:`COLUMNS` of the Monte Carlo result.

    ``efficiency`` is relative to the mean; ``bound_ratio`` is the Cramér–Rao bound
    over the estimator's MSE (1 = efficient; null where the model has no bound).
    """
    from .. import montecarlo

    rows = []
    for name in noises:
        study = montecarlo.run(ESTIMATORS, noise_model(name), m=m, reps=reps, seed=seed,
                               progress=f"{name}" if progress else False)
        for estimator in ESTIMATORS:
            row = study[estimator]
            rows.append({"noise": name, "estimator": estimator, "m": m, "reps": reps,
                         **{k: _float(getattr(row, k)) for k in COLUMNS}})
    return rows


def format_rows(rows: List[Dict]) -> str:
    """A fixed-width table of the rows."""
    keys = list(rows[0])
    cells = [keys] + [["—" if r[k] is None else (f"{r[k]:.4g}" if isinstance(r[k], float) else str(r[k]))
                       for k in keys] for r in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(keys))]
    lines = ["  ".join(c.rjust(w) for c, w in zip(row, widths)) for row in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)
