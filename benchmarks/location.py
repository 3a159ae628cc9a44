"""Time per sample of lossfn.location.huber_location against one-sample-at-a-time peers.

Huber's M-estimate of location with the normalized MAD as scale, for B samples of
m points (Student t noise, 3 degrees of freedom, plus 10% gross outliers), float64.
lossfn solves the whole batch in one call (time divided by B). The peers solve the
first ``subset`` samples in a Python loop (time divided by ``subset``), each with
the same MAD scale:

* statsmodels ``estimate_location`` (``HuberT``), its iterative solver;
* a numpy/scipy loop: ``scipy.optimize.brentq`` on the estimating equation
  ``Σ clip((x − μ)/s, −δ, δ) = 0``;
* for scale, the batched ``lossfn.location.median`` of the same data (the
  estimator the Huber location generalizes; no ratio target).

The accuracy column is the largest difference from the brentq root, relative to
the sample's scale. Runs of one row are interleaved (``benchmarks/_timing.py``)
and each number is a median over the repeats.

    python benchmarks/location.py                  # B = 100 000 × m = 25, B = 1000 × m = 1000
    python benchmarks/location.py --quick          # small sizes, a smoke test
    python benchmarks/location.py --clock cpu      # CPU time: steadier on a busy machine
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from _timing import interleaved_medians  # noqa: E402

from lossfn.location import MAD_TO_SIGMA, huber_location, median  # noqa: E402

DELTA = 1.345


def make_data(B: int, m: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    normal = torch.randn(B, m, generator=g, dtype=torch.float64)
    # Student t(3) from normals only, so that the seeded generator makes all of it.
    chi2 = torch.randn(B, m, 3, generator=g, dtype=torch.float64).square().sum(-1)
    outlier = torch.rand(B, m, generator=g, dtype=torch.float64) < 0.1
    gross = 100 * torch.randn(B, m, generator=g, dtype=torch.float64)
    return 5.0 + normal / (chi2 / 3).sqrt() + outlier * gross


def peers():
    """Solve-one-sample functions ``x (m,) numpy → μ``, each with the normalized MAD as scale."""
    from scipy.optimize import brentq
    from statsmodels.robust.norms import HuberT, estimate_location

    def mad(x):
        return np.median(np.abs(x - np.median(x))) / MAD_TO_SIGMA

    def statsmodels_huber(x):
        return float(estimate_location(x, mad(x), norm=HuberT(t=DELTA), maxiter=1000, tol=1e-12))

    def brentq_root(x):
        s = mad(x)
        return brentq(lambda mu: np.clip((x - mu) / s, -DELTA, DELTA).sum(), x.min(), x.max(),
                      xtol=1e-14, rtol=1e-15)

    return {"statsmodels estimate_location (loop)": statsmodels_huber,
            "scipy brentq on Σψ = 0 (loop)": brentq_root}, brentq_root, mad


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes (smoke test)")
    parser.add_argument("--repeats", type=int, default=5, help="repeats of each run")
    parser.add_argument("--clock", choices=("wall", "cpu"), default="wall",
                        help="wall-clock time or the process's CPU time")
    parser.add_argument("--threads", type=int, default=1, help="threads for torch (default 1)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    clock = time.process_time if args.clock == "cpu" else time.perf_counter
    shapes = ((2000, 25), (50, 200)) if args.quick else ((100_000, 25), (1000, 1000))
    subset = 20 if args.quick else 200
    loops, reference, mad = peers()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} thread(s), float64, "
          f"delta={DELTA}, peers on {subset} samples, {args.clock} clock, median of {args.repeats}")
    header = f"{'B x m':>12}  {'method':<40} {'time/sample':>12} {'ratio':>8}  accuracy"
    print(header)
    print("-" * len(header))
    for B, m in shapes:
        x = make_data(B, m)
        xn = x[:subset].numpy()
        ours = huber_location(x, delta=DELTA).location[:subset].numpy()
        roots = np.array([reference(row) for row in xn])
        scales = np.array([mad(row) for row in xn])
        runs = {"lossfn huber_location (batched)": lambda: huber_location(x, delta=DELTA),
                "lossfn median (batched, for scale)": lambda: median(x)}
        for name, solve in loops.items():
            runs[name] = lambda f=solve: [f(row) for row in xn]
        seconds = interleaved_medians(runs, repeats=args.repeats, warmup=1, clock=clock)
        mine = seconds["lossfn huber_location (batched)"] / B
        error = np.abs(ours - roots).max() / scales.min()
        print(f"{B:>6} x {m:<4}  {'lossfn huber_location (batched)':<40} {mine * 1e6:>9.2f} µs "
              f"{'1.0':>8}  {error:.1e} of s from brentq's root")
        print(f"{'':>12}  {'lossfn median (batched, for scale)':<40} "
              f"{seconds['lossfn median (batched, for scale)'] / B * 1e6:>9.2f} µs")
        for name, solve in loops.items():
            theirs = seconds[name] / subset
            answers = np.array([solve(row) for row in xn])
            diff = np.abs(answers - roots).max() / scales.min()
            print(f"{'':>12}  {name:<40} {theirs * 1e6:>9.2f} µs {theirs / mine:>7.0f}x  "
                  f"{diff:.1e} of s from brentq's root")
        print()


if __name__ == "__main__":
    main()
