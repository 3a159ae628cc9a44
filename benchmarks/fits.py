"""Speed of ``lossfn.fit.ols`` against its peers, side by side in one run.

Simple regression (B datasets × m points, float32 and float64):

* ``fit.ols(x, y)``, and the same call on its pure-torch route (``torch``:
  ``LOSSFN_NATIVE=0``, what ``vmap``, autograd and accelerators run; the
  default on the CPU is the native kernel of :mod:`lossfn._native`);
* batched ``torch.linalg.lstsq`` on the prebuilt design ``[1, x]`` (building it
  is not timed, which favours lstsq);
* a ``scipy.stats.linregress`` loop and a ``statsmodels`` OLS loop, timed on the
  first ``--loop-datasets`` datasets after a warm-up call and scaled to B;
* the read-once floor ``x.sum() + y.sum()``: no fit can read its data faster.

Multiple regression (B = 1000, m = 500, d = 5 and 20): ``fit.ols`` (and its
pure-torch route) against batched ``torch.linalg.lstsq`` with an intercept
column, and one batched
float64 Gram product of the prebuilt ``[1 X y]``: the work of one pass of a
Gram-based solver (``fit.ols`` makes one, accumulated in float64, for float32
data, and on the native route also for the float64 datasets where one pass
keeps 12 digits, as these random designs do; the others, Filip's among them,
and every float64 dataset on the torch route, get CholeskyQR2's second).

Every number is the median of ``--repeats`` timed calls after one warm-up call,
the peers of one row interleaved (``benchmarks/_timing.py``) so that machine
noise hits them alike; by the wall clock (default) or, with ``--clock cpu``, by
the process's CPU time, which is steadier on a shared, oversubscribed machine
(use it with ``--threads 1``, which also limits numpy's BLAS).
Targets (issue 3): ≥ 2× faster than lstsq and ≥ 100× faster than the statsmodels
loop for simple regression, within 8× of the read-once floor; ≥ 3× faster
than lstsq for multiple regression.

Usage::

    python benchmarks/fits.py            # full sizes
    python benchmarks/fits.py --quick    # small sizes, a smoke test
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from typing import Callable, Dict, List

import numpy as np
import scipy.stats
import statsmodels.api as sm
import torch

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:0] = [HERE, os.path.dirname(HERE)]  # the clone's lossfn and the timing helpers

from _timing import interleaved_medians, torch_route  # noqa: E402

from lossfn import fit  # noqa: E402

CLOCK: Callable[[], float] = time.perf_counter


def timed(fns: Dict[str, Callable[[], object]], repeats: int) -> Dict[str, float]:
    return interleaved_medians(fns, repeats=repeats, warmup=1, clock=CLOCK)


def simple_rows(shapes, dtypes, repeats: int, loop_datasets: int) -> List[Dict]:
    rows = []
    gen = torch.Generator().manual_seed(0)
    for batch, m in shapes:
        for dtype in dtypes:
            x = torch.rand(batch, m, generator=gen, dtype=dtype)
            y = 1 + 2 * x + 0.1 * torch.randn(batch, m, generator=gen, dtype=dtype)
            design = torch.stack([torch.ones_like(x), x], dim=-1)
            col = y.unsqueeze(-1)
            xn, yn = x.double().numpy(), y.double().numpy()
            count = min(loop_datasets, batch)
            designs = [sm.add_constant(xn[k]) for k in range(count)]
            t = timed({
                "ols": lambda: fit.ols(x, y),
                "torch": torch_route(lambda: fit.ols(x, y)),
                "lstsq": lambda: torch.linalg.lstsq(design, col),
                "floor": lambda: (x.sum(), y.sum()),
            }, repeats)
            # The Python loops run on the first `count` datasets, scaled to B.
            loops = timed({
                "linregress": lambda: [scipy.stats.linregress(xn[k], yn[k]) for k in range(count)],
                "statsmodels": lambda: [sm.OLS(yn[k], designs[k]).fit() for k in range(count)],
            }, max(3, repeats // 3))
            t.update({name: v * batch / count for name, v in loops.items()})
            rows.append({"shape": f"{batch}x{m}", "dtype": str(dtype).split(".")[-1], **t})
    return rows


def multiple_rows(ds, dtypes, batch: int, m: int, repeats: int) -> List[Dict]:
    rows = []
    gen = torch.Generator().manual_seed(1)
    for d in ds:
        for dtype in dtypes:
            x = torch.randn(batch, m, d, generator=gen, dtype=dtype)
            y = x.sum(-1) + torch.randn(batch, m, generator=gen, dtype=dtype)
            design = torch.cat([torch.ones(batch, m, 1, dtype=dtype), x], dim=-1)
            col = y.unsqueeze(-1)
            wide = torch.cat([design, col], dim=-1).double()
            t = timed({
                "ols": lambda: fit.ols(x, y),
                "torch": torch_route(lambda: fit.ols(x, y)),
                "lstsq": lambda: torch.linalg.lstsq(design, col),
                "gram": lambda: wide.mT @ wide,
            }, repeats)
            rows.append({"shape": f"{batch}x{m}x{d}", "dtype": str(dtype).split(".")[-1], **t})
    return rows


def ms(seconds: float) -> str:
    return f"{seconds * 1e3:9.3f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="small sizes (smoke test)")
    parser.add_argument("--repeats", type=int, default=None, help="timed calls per entry")
    parser.add_argument("--loop-datasets", type=int, default=None,
                        help="datasets timed in the scipy/statsmodels loops")
    parser.add_argument("--clock", choices=("wall", "cpu"), default="wall",
                        help="wall time (default) or process CPU time")
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads")
    args = parser.parse_args()
    global CLOCK
    CLOCK = time.perf_counter if args.clock == "wall" else time.process_time
    if args.threads:
        torch.set_num_threads(args.threads)
        # numpy's BLAS (statsmodels, scipy) gets the same number of threads:
        # with the CPU clock, extra spinning BLAS threads would bill the peers.
        from threadpoolctl import threadpool_limits  # a scikit-learn dependency

        threadpool_limits(args.threads)
    dtypes = (torch.float32, torch.float64)
    if args.quick:
        shapes, repeats, loops, multi = [(200, 100), (20, 1000)], 3, 20, (100, 200)
    else:
        shapes, repeats, loops, multi = [(10000, 100), (1000, 1000), (100, 10000)], 9, 200, (1000, 500)
    repeats = args.repeats or repeats
    loops = args.loop_datasets or loops

    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; {args.clock} clock, "
          f"median of {repeats} calls, milliseconds per batch")
    print("\nSimple regression (targets: >= 2x lstsq, >= 100x statsmodels, <= 8x floor)")
    head = (f"{'B x m':>11} {'dtype':>8} {'ols':>9} {'torch':>9} {'lstsq':>9} {'linregress':>10} "
            f"{'statsmod':>9} {'floor':>9} | {'vs lstsq':>8} {'vs sm':>7} {'/floor':>7}  met")
    print(head)
    for r in simple_rows(shapes, dtypes, repeats, loops):
        vs_lstsq, vs_sm, over_floor = r["lstsq"] / r["ols"], r["statsmodels"] / r["ols"], r["ols"] / r["floor"]
        met = vs_lstsq >= 2 and vs_sm >= 100 and over_floor <= 8
        print(f"{r['shape']:>11} {r['dtype']:>8} {ms(r['ols'])} {ms(r['torch'])} {ms(r['lstsq'])} "
              f"{ms(r['linregress']):>10} {ms(r['statsmodels'])} {ms(r['floor'])} | "
              f"{vs_lstsq:7.1f}x {vs_sm:6.0f}x {over_floor:6.1f}x  {'yes' if met else 'NO'}")

    print("\nMultiple regression (target: >= 3x lstsq; gram: one float64 Gram product of [1 X y])")
    print(f"{'B x m x d':>13} {'dtype':>8} {'ols':>9} {'torch':>9} {'lstsq':>9} {'gram':>9} | "
          f"{'vs lstsq':>8} {'/gram':>6}  met")
    for r in multiple_rows((5, 20), dtypes, multi[0], multi[1], repeats):
        ratio = r["lstsq"] / r["ols"]
        print(f"{r['shape']:>13} {r['dtype']:>8} {ms(r['ols'])} {ms(r['torch'])} {ms(r['lstsq'])} "
              f"{ms(r['gram'])} | {ratio:7.1f}x {r['ols'] / r['gram']:5.1f}x  {'yes' if ratio >= 3 else 'NO'}")


if __name__ == "__main__":
    main()
