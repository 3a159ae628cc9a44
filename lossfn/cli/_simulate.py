"""``lossfn simulate``: the Monte Carlo efficiency table of the location estimators.

A thin front over :func:`lossfn.montecarlo.run`: the mean (Gaussian MLE), the
median (Laplace MLE) and Huber's M-estimate (δ = 1.345, MAD scale), each drawn
``reps`` times from samples of ``m`` points of every chosen noise model.
"""

from __future__ import annotations

import math
from typing import Dict, List, Sequence

from .. import location
from ..noise import Gaussian, Huber, Laplace

__all__ = ["ESTIMATORS", "noise_model", "efficiency_table", "format_rows"]


def _huber(samples):
    return location.huber_location(samples, delta=1.345).location


#: name → estimator of the location from samples ``(..., m)``.
ESTIMATORS = {"mean": location.mean, "median": location.median, "huber": _huber}


def noise_model(name: str):
    """The noise model behind a ``--noise`` choice (unit scale)."""
    if name == "gaussian":
        return Gaussian(1.0)
    if name == "laplace":
        return Laplace(1.0)
    if name == "huber":
        return Huber(1.345)
    from .. import montecarlo

    # Tukey's contaminated normal, 0.9·N(0, 1) + 0.1·N(0, 3²), the textbook case
    # where the mean loses to the median.
    return montecarlo.Contaminated(eps=0.1, k=3.0)


def _float(value) -> float:
    v = float(value)
    return v if math.isfinite(v) else None


def efficiency_table(
    noises: Sequence[str], *, m: int, reps: int, seed: int = 0, progress: bool = False
) -> List[Dict]:
    """One row per (noise, estimator): every field of the Monte Carlo result as a number."""
    from .. import montecarlo

    rows = []
    for name in noises:
        result = montecarlo.run(ESTIMATORS, noise_model(name), m=m, reps=reps, seed=seed,
                                progress=progress)
        for estimator in ESTIMATORS:
            fields = result[estimator]._asdict()
            rows.append({"noise": name, "estimator": estimator, "m": m, "reps": reps,
                         **{k: _float(v) for k, v in fields.items()}})
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
