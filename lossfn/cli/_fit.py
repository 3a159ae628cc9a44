"""``lossfn fit``: fit every group three ways, score the noise models, recommend a loss.

For the groups of a CSV file, padded into one batch with a mask, the line
``y = α + βx`` is fitted by OLS (the Gaussian MLE), LAD (the Laplace MLE) and
Huber regression, each in one batched call. Each model's residuals are then
scored by their maximized log-likelihood under that model
(:func:`lossfn.select.compare_noise`); AIC ``= 2k − 2·loglik`` with ``k = 3``
(intercept, slope, scale), and the recommended loss is that of the lowest AIC.
"""

from __future__ import annotations

import math
import sys
from typing import Dict, List, Optional

import torch

from .. import select
from ._table import Groups

__all__ = ["MIN_POINTS", "METHODS", "check_fittable", "fit_groups", "format_table", "flatten"]

#: A line (2 parameters) and a noise scale need at least 3 points.
MIN_POINTS = 3

#: Line fits, in the order of :data:`lossfn.select.NOISE_MODELS` (the model each is the MLE of).
METHODS = ("ols", "lad", "huber")

#: Above this many points in all, a progress bar is shown (when tqdm is installed).
_LONG_RUN_POINTS = 200_000


def _progress(total: int, points: int, enabled: Optional[bool]):
    """A tqdm bar over the stages on stderr, or a silent stand-in."""
    want = points >= _LONG_RUN_POINTS if enabled is None else enabled
    if want:
        try:
            from tqdm import tqdm
        except ImportError:
            want = False
    if not want:
        return _Silent()
    return tqdm(total=total, desc="lossfn fit", unit="stage", file=sys.stderr, leave=False)


class _Silent:
    def update(self, n: int = 1) -> None:
        pass

    def set_postfix_str(self, text: str) -> None:
        pass

    def close(self) -> None:
        pass


def _number(value: torch.Tensor) -> Optional[float]:
    v = float(value)
    return v if math.isfinite(v) else None


def fit_groups(
    groups: Groups, *, delta: float = 1.345, progress: Optional[bool] = None,
    notes: Optional[List[str]] = None,
) -> List[Dict]:
    """Fit all groups at once and return one record per group (see ``lossfn fit --help``).

    The line fits come from :mod:`lossfn.fit` (``ols``, ``lad``, ``huber``), the
    scores from :func:`lossfn.select.compare_noise`. A group with fewer than
    :data:`MIN_POINTS` points or a failed fit has ``ok=False``, null numbers and
    no recommendation; the others are unaffected. When ``notes`` is a list, one
    line per failed group that had enough points is appended to it, saying which
    step failed.
    """
    from .. import fit  # the estimators layer; imported here so --help stays fast

    x, y, mask = groups.x, groups.y, groups.mask
    bar = _progress(len(METHODS) + 1, int(mask.sum()), progress)
    fits = {}
    try:
        fitters = {"ols": lambda: fit.ols(x, y, mask=mask),
                   "lad": lambda: fit.lad(x, y, mask=mask),
                   "huber": lambda: fit.huber(x, y, delta=delta, mask=mask)}
        for name in METHODS:
            bar.set_postfix_str(name)
            fits[name] = fitters[name]()
            bar.update()
        residuals = [
            torch.where(mask, y - (f.intercept.unsqueeze(-1) + f.slope.unsqueeze(-1) * x), 0.0)
            for f in fits.values()
        ]
        bar.set_postfix_str("log-likelihoods")
        scores = select.compare_noise(residuals, mask=mask, delta=delta, n_params=2)
        bar.update()
    finally:
        bar.close()

    n = groups.n
    ok = (n >= MIN_POINTS) & scores.ok
    for f in fits.values():
        ok = ok & f.ok
    records = []
    for g, name in enumerate(groups.names):
        good = bool(ok[g])

        def value(t: torch.Tensor) -> Optional[float]:
            return _number(t) if good else None

        record = {"group": name, "n": int(n[g]), "ok": good}
        for method, f in fits.items():
            record[method] = {"intercept": value(f.intercept[g]), "slope": value(f.slope[g])}
        record["loglik"] = {m: value(scores.loglik[g, i]) for i, m in enumerate(select.NOISE_MODELS)}
        record["aic"] = {m: value(scores.aic[g, i]) for i, m in enumerate(select.NOISE_MODELS)}
        best = select.NOISE_MODELS[int(scores.best[g])]
        record["recommended"] = select.LOSS_OF[best] if good else None
        records.append(record)
        if notes is not None and not good and int(n[g]) >= MIN_POINTS:
            failed = [m.upper() for m, f in fits.items() if not bool(f.ok[g])]
            why = (f"the {'/'.join(failed)} fit failed (constant x, a non-finite value, "
                   "or no convergence)" if failed
                   else "the residuals have no spread, so no noise scale can be fitted")
            notes.append(f"group {name!r}: {why}; reported with ok=false.")
    return records


def flatten(record: Dict) -> Dict:
    """One CSV row: nested fields become ``ols_intercept``, ``aic_laplace``, …"""
    row = {}
    for key, value in record.items():
        if isinstance(value, dict):
            row.update({f"{key}_{inner}": v for inner, v in value.items()})
        else:
            row[key] = value
    return row


def _cell(value) -> str:
    if value is None:
        return "—"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:.3f}" if abs(value) < 1e5 else f"{value:.3g}"
    return str(value)


def format_table(records: List[Dict]) -> str:
    """A fixed-width table of the records, one line per group."""
    header = ["group", "n", "ok", "OLS α", "OLS β", "LAD α", "LAD β", "Huber α", "Huber β",
              "AIC Gauss", "AIC Laplace", "AIC Huber", "use"]
    lines = [header]
    for r in records:
        lines.append([
            r["group"], r["n"], r["ok"],
            r["ols"]["intercept"], r["ols"]["slope"],
            r["lad"]["intercept"], r["lad"]["slope"],
            r["huber"]["intercept"], r["huber"]["slope"],
            r["aic"]["gaussian"], r["aic"]["laplace"], r["aic"]["huber"],
            r["recommended"],
        ])
    cells = [[_cell(v) for v in line] for line in lines]
    widths = [max(len(row[i]) for row in cells) for i in range(len(header))]
    out = []
    for k, row in enumerate(cells):
        out.append("  ".join(c.ljust(w) if i == 0 else c.rjust(w)
                             for i, (c, w) in enumerate(zip(row, widths))))
        if k == 0:
            out.append("  ".join("-" * w for w in widths))
    return "\n".join(out)


def check_fittable(groups: Groups) -> List[str]:
    """Notes (for stderr) on groups too small to fit; they stay in the output with ok=false."""
    notes = []
    for name, count in zip(groups.names, groups.n.tolist()):
        if count < MIN_POINTS:
            notes.append(
                f"group {name!r} has {count} point{'s' if count != 1 else ''}; a line and a "
                f"noise scale need at least {MIN_POINTS}: reported with ok=false."
            )
    return notes
