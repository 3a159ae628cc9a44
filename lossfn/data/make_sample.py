"""Make ``sample.csv``, the dataset ``lossfn fit`` runs on when given no file.

Six groups share the form ``y = α + βx + ε`` with x uniform on [0, 10] and differ
in the noise ε, so that the recommended loss differs between them:

===============  ====  =====  =====  ==========================================================
group            m     α      β      noise
===============  ====  =====  =====  ==========================================================
``gaussian``     120   1.0    2.0    N(0, 0.5²)
``laplace``      150   -0.5   1.5    Laplace(0, 0.4)
``outliers``     100   2.0    0.5    N(0, 0.3²), then 10% of points moved up by 4–8
``student_t``    140   0.0    1.0    0.5·t(2)
``contaminated`` 200  0.5    -0.8   N(0, 0.4²), each point with probability 0.1 N(0, 1.2²)
``small``        15    3.0    -1.0   N(0, 0.2²)
===============  ====  =====  =====  ==========================================================

The rows are shuffled, so the groups are interleaved as in real files. The file
is made once and committed; rerunning with the same seed gives the same bytes:

    python -m lossfn.data.make_sample            # rewrites lossfn/data/sample.csv
"""

from __future__ import annotations

import argparse
import csv
from pathlib import Path

import numpy as np

SEED = 20240607

GROUPS = (
    # name, m, intercept, slope
    ("gaussian", 120, 1.0, 2.0),
    ("laplace", 150, -0.5, 1.5),
    ("outliers", 100, 2.0, 0.5),
    ("student_t", 140, 0.0, 1.0),
    ("contaminated", 200, 0.5, -0.8),
    ("small", 15, 3.0, -1.0),
)


def _noise(name: str, m: int, rng: np.random.Generator) -> np.ndarray:
    if name == "gaussian":
        return rng.normal(0.0, 0.5, m)
    if name == "laplace":
        return rng.laplace(0.0, 0.4, m)
    if name == "outliers":
        eps = rng.normal(0.0, 0.3, m)
        hit = rng.choice(m, size=m // 10, replace=False)
        eps[hit] += rng.uniform(4.0, 8.0, hit.size)
        return eps
    if name == "student_t":
        return 0.5 * rng.standard_t(2, m)
    if name == "contaminated":
        gross = rng.random(m) < 0.1
        return np.where(gross, rng.normal(0.0, 1.2, m), rng.normal(0.0, 0.4, m))
    return rng.normal(0.0, 0.2, m)


def make_rows(seed: int = SEED) -> list:
    """The rows ``(group, x, y)`` of the sample, shuffled, values rounded to 4 decimals."""
    rng = np.random.default_rng(seed)
    rows = []
    for name, m, intercept, slope in GROUPS:
        x = rng.uniform(0.0, 10.0, m)
        y = intercept + slope * x + _noise(name, m, rng)
        rows += [(name, f"{a:.4f}", f"{b:.4f}") for a, b in zip(x, y)]
    order = rng.permutation(len(rows))
    return [rows[i] for i in order]


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description="Write lossfn's sample dataset.")
    parser.add_argument("--out", default=str(Path(__file__).with_name("sample.csv")))
    parser.add_argument("--seed", type=int, default=SEED)
    args = parser.parse_args(argv)
    with open(args.out, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(("group", "x", "y"))
        writer.writerows(make_rows(args.seed))


if __name__ == "__main__":
    main()
