"""The records a study returns and how they print."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Dict, Iterator, NamedTuple, Optional, Tuple

import torch

from ._stats import Moments, Summary

__all__ = ["Row", "Study"]


class Row(NamedTuple):
    """One estimator's results; every field a 0-d float64 tensor (``ok`` bool).

    ``mean`` is the average estimate, ``bias = mean − truth``, ``variance`` the
    sample variance of the estimates (``n − 1``), ``mse`` the mean squared error,
    ``efficiency`` the reference estimator's variance over this one's,
    ``bound_ratio`` the study's bound (Cramér–Rao or OLS) over this ``mse`` (nan
    when there is no bound). Each ``*_se`` is a Monte Carlo standard error
    (``mean_se == bias_se``). ``ok`` is False when the estimator produced a
    non-finite value in some replicate (its fields are then nan or inf).
    """

    mean: torch.Tensor
    mean_se: torch.Tensor
    bias: torch.Tensor
    bias_se: torch.Tensor
    variance: torch.Tensor
    variance_se: torch.Tensor
    mse: torch.Tensor
    mse_se: torch.Tensor
    efficiency: torch.Tensor
    efficiency_se: torch.Tensor
    bound_ratio: torch.Tensor
    ok: torch.Tensor


def rows_from(summary: Summary, names: Tuple[str, ...], truth: float,
              bound: Optional[float]) -> Dict[str, Row]:
    """Split a batched :class:`Summary` into one :class:`Row` per estimator."""
    bound_t = summary.mse.new_tensor(math.nan if bound is None else float(bound))
    finite = torch.stack([t.isfinite() for t in summary]).all(0)
    out = {}
    for i, name in enumerate(names):
        out[name] = Row(
            mean=summary.bias[i] + truth, mean_se=summary.bias_se[i],
            bias=summary.bias[i], bias_se=summary.bias_se[i],
            variance=summary.variance[i], variance_se=summary.variance_se[i],
            mse=summary.mse[i], mse_se=summary.mse_se[i],
            efficiency=summary.efficiency[i], efficiency_se=summary.efficiency_se[i],
            bound_ratio=bound_t / summary.mse[i], ok=finite[i],
        )
    return out


def _pm(value: torch.Tensor, se: torch.Tensor) -> str:
    return f"{value.item():.5g} ± {se.item():.2g}"


@dataclass(frozen=True, eq=False)
class Study(Mapping):
    """A Monte Carlo study's results: ``study[name]`` is that estimator's :class:`Row`.

    Attributes:
        rows: name → :class:`Row`, in the order the estimators were given.
        reference: name of the estimator the efficiencies are relative to.
        reps, m: replicates and points per replicate.
        truth: the true value being estimated (location or slope).
        seed, block_size: what defines the random numbers (with the noise model).
        noise: the noise model.
        bound: the variance bound of the study (Cramér–Rao bound of the location,
            or the OLS slope variance ``Var(ε)/Σ(x − x̄)²``), or None where unknown.
        bound_label: what ``bound`` is.
        moments: the merged co-moments of the errors (see :mod:`._stats`).
    """

    rows: Dict[str, Row]
    reference: str
    reps: int
    m: int
    truth: float
    seed: int
    block_size: int
    noise: object
    bound: Optional[float]
    bound_label: str
    moments: Moments

    def __getitem__(self, name: str) -> Row:
        try:
            return self.rows[name]
        except KeyError:
            raise KeyError(f"no estimator {name!r} in this study; it has {list(self.rows)}") from None

    def __iter__(self) -> Iterator[str]:
        return iter(self.rows)

    def __len__(self) -> int:
        return len(self.rows)

    def table(self) -> str:
        """The results as a fixed-width text table (values ± Monte Carlo standard errors)."""
        head = (f"{self.noise!r}: m = {self.m}, reps = {self.reps}, truth = {self.truth:g}, "
                f"seed = {self.seed}")
        bound = ("" if self.bound is None
                 else f"\n{self.bound_label} = {float(self.bound):.6g}")
        columns = ("estimator", "bias", "variance", "mse", f"eff. vs {self.reference}",
                   "bound/mse")
        body = [
            (name, _pm(r.bias, r.bias_se), _pm(r.variance, r.variance_se), _pm(r.mse, r.mse_se),
             _pm(r.efficiency, r.efficiency_se),
             "" if self.bound is None else f"{r.bound_ratio.item():.4f}")
            for name, r in self.rows.items()
        ]
        widths = [max(len(str(line[i])) for line in (columns, *body)) for i in range(len(columns))]
        lines = ["  ".join(str(c).ljust(w) for c, w in zip(line, widths)).rstrip()
                 for line in (columns, *body)]
        return "\n".join([head + bound, *lines])

    def __str__(self) -> str:
        return self.table()

    def __repr__(self) -> str:
        return f"Study({list(self.rows)}, noise={self.noise!r}, m={self.m}, reps={self.reps})"
