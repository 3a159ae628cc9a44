"""Load the NIST StRD datasets of tests/data/nist with their certified values."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path
from typing import Dict, List, NamedTuple

import numpy as np

ROOT = Path(__file__).resolve().parents[1] / "data" / "nist"

REGRESSION = ["Norris", "Pontius", "NoInt1", "NoInt2", "Filip", "Longley",
              "Wampler1", "Wampler2", "Wampler3", "Wampler4", "Wampler5"]
UNIVARIATE = ["PiDigits", "Lottery", "Lew", "Mavro", "Michelso",
              "NumAcc1", "NumAcc2", "NumAcc3", "NumAcc4"]


class Regression(NamedTuple):
    x: np.ndarray  # (m,) for one predictor, (m, d) otherwise; no intercept column
    y: np.ndarray
    intercept: bool
    meta: Dict


def _columns(name: str) -> Dict[str, List[float]]:
    with open(ROOT / f"{name}.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    return {k: np.array([float(r[k]) for r in rows]) for k in rows[0]}


def regression(name: str) -> Regression:
    meta = json.loads((ROOT / f"{name}.json").read_text())
    cols = _columns(name)
    design = meta["design"]
    if design["kind"] == "polynomial":
        powers = [cols["x"] ** k for k in range(1, design["degree"] + 1)]
        x = powers[0] if len(powers) == 1 else np.stack(powers, axis=1)
    else:
        x = np.stack([cols[p] for p in design["predictors"]], axis=1)
    return Regression(x, cols["y"], design["intercept"], meta)


def univariate(name: str):
    return _columns(name)["y"], json.loads((ROOT / f"{name}.json").read_text())


def lre(estimate, certified) -> float:
    """Minimum log relative error (correct significant digits), capped at 15."""
    est = np.atleast_1d(np.asarray(estimate, dtype=float))
    cert = np.atleast_1d(np.asarray(certified, dtype=float))
    worst = math.inf
    for e, c in zip(est, cert, strict=True):
        err = abs(e - c) if c == 0 else abs(e - c) / abs(c)
        worst = min(worst, 15.0 if err == 0 else min(15.0, -math.log10(err)))
    return worst
