"""Time per fit of lossfn.fit.lad / lossfn.fit.huber against the one-dataset-at-a-time peers.

B datasets of m points, d features, heavy-tailed noise (Student t, 1.5 degrees of
freedom) plus 10% gross outliers. lossfn fits the whole batch in one call (time
divided by B); each peer fits the first ``subset`` datasets in a Python loop
(time divided by ``subset``). Runs of one row group are interleaved
(``benchmarks/_timing.py``) so that machine noise hits them alike; each number
is a median over the repeats. The ratio column is the peer's time per fit over
lossfn's; the "torch route" rows time lossfn's same call with the native
kernels switched off (``LOSSFN_NATIVE=0``), the pure-torch code that
``torch.func.vmap``, autograd and GPUs run. The accuracy column checks each peer's answers against lossfn's on the
same datasets: for LAD the excess of the peer's Σ|r| over the exact optimum,
for RLM the largest relative difference of the coefficients.

Targets (issue 4): lossfn ≥ 30× faster per fit than the fastest peer.

    python benchmarks/robust.py                      # B = 1000, m = 200, d = 1 and 5
    python benchmarks/robust.py --quick              # small sizes, a smoke test
    python benchmarks/robust.py --clock cpu          # CPU time: steadier on a busy machine
"""

from __future__ import annotations

import argparse
import os
import sys
import time
import warnings

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from _timing import interleaved_medians, torch_route  # noqa: E402

from lossfn.fit import huber, lad  # noqa: E402


def make_data(B: int, m: int, d: int, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    X = torch.randn(B, m, d, generator=g, dtype=torch.float64)
    beta = torch.randn(B, d, generator=g, dtype=torch.float64)
    # torch.distributions samples from the global generator: seed it here,
    # inside a fork, so that every run times the same data.
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        chi = torch.distributions.Chi2(1.5).sample((B, m)).to(torch.float64)
    noise = torch.randn(B, m, generator=g, dtype=torch.float64) / (chi / 1.5).sqrt()
    outlier = torch.rand(B, m, generator=g, dtype=torch.float64) < 0.1
    noise = noise + outlier * 50 * torch.randn(B, m, generator=g, dtype=torch.float64)
    return X, 1.0 + (X * beta.unsqueeze(-2)).sum(-1) + noise


def peers():
    """Fit-one-dataset functions returning ``[intercept, slopes...]`` (numpy)."""
    import statsmodels.api as sm
    from scipy.optimize import linprog
    from sklearn.linear_model import HuberRegressor, QuantileRegressor

    def lp(X, y):
        A = np.hstack([np.ones((len(y), 1)), X])
        m, p = A.shape
        res = linprog(np.r_[np.zeros(p), np.ones(2 * m)], A_eq=np.hstack([A, np.eye(m), -np.eye(m)]),
                      b_eq=y, bounds=[(None, None)] * p + [(0, None)] * (2 * m), method="highs")
        return res.x[:p]

    def sklearn_coef(model):
        return np.r_[model.intercept_, model.coef_]

    lad_peers = {
        "statsmodels QuantReg(q=0.5)": lambda X, y: sm.QuantReg(
            y, sm.add_constant(X, has_constant="add")).fit(q=0.5).params,
        "sklearn QuantileRegressor(alpha=0, highs)": lambda X, y: sklearn_coef(QuantileRegressor(
            quantile=0.5, alpha=0.0, solver="highs").fit(X, y)),
        "scipy linprog(highs) loop": lp,
    }
    huber_peers = {
        "statsmodels RLM(HuberT)": lambda X, y: sm.RLM(
            y, sm.add_constant(X, has_constant="add"), M=sm.robust.norms.HuberT()).fit().params,
        "sklearn HuberRegressor(alpha=0)": lambda X, y: sklearn_coef(HuberRegressor(alpha=0.0).fit(X, y)),
    }
    return lad_peers, huber_peers


def lad_gap(X, y, coef, best):
    """Relative excess of a peer's Σ|r| over lossfn's exact optimum (0 = optimal)."""
    objective = np.abs(y - coef[0] - X @ coef[1:]).sum()
    return (objective - best) / best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes (smoke test)")
    parser.add_argument("--repeats", type=int, default=None, help="repeats of the batched call")
    parser.add_argument("--clock", choices=("wall", "cpu"), default="wall",
                        help="wall-clock time or the process's CPU time")
    parser.add_argument("--threads", type=int, default=1,
                        help="threads for torch and for the peers' BLAS (default 1: one core each)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    B, m, subset, repeats = (50, 40, 10, 3) if args.quick else (1000, 200, 50, 5)
    clock = time.process_time if args.clock == "cpu" else time.perf_counter
    repeats = args.repeats or repeats
    lad_peers, huber_peers = peers()
    # After the peers' imports: threadpoolctl limits only the thread pools
    # (BLAS, OpenMP) loaded so far. Pools loaded later kept their threads,
    # whose busy-waiting after each peer call was billed, under the CPU clock,
    # to whatever ran next: lossfn's fits measured up to 2x slower.
    from threadpoolctl import threadpool_limits

    limits = threadpool_limits(args.threads)  # noqa: F841 (kept for the whole run)
    # After the peers' imports: statsmodels installs its own warning filters.
    # QuantReg hits its iteration limit on some of these datasets; that is
    # part of what it costs, and it is counted, not shown.
    warnings.filterwarnings("ignore")

    print(f"torch {torch.__version__}, {torch.get_num_threads()} thread(s) for torch and BLAS, "
          f"float64, B={B}, m={m}, peers on {subset} datasets, {args.clock} clock, "
          f"median of {repeats}")
    header = f"{'d':>2}  {'method':<44} {'time/fit':>11} {'ratio':>8}  {'accuracy':<}"
    print(header)
    print("-" * len(header))
    for d in (1, 5):
        X, y = make_data(B, m, d, seed=d)
        Xn, yn = X[:subset].numpy(), y[:subset].numpy()
        lad_fit, huber_fit = lad(X, y), huber(X, y)
        mine_huber = np.c_[huber_fit.intercept.numpy(), huber_fit.slope.numpy()]
        for name, ours, result, group in (
            ("lossfn.fit.lad (batched)", lambda: lad(X, y), lad_fit, lad_peers),
            ("lossfn.fit.huber (batched)", lambda: huber(X, y), huber_fit, huber_peers),
        ):
            route = name.replace("(batched)", "(torch route)")
            runs = {name: ours, route: torch_route(ours)}
            for peer, fit_one in group.items():
                runs[peer] = lambda f=fit_one: [f(Xn[b], yn[b]) for b in range(subset)]
            seconds = interleaved_medians(runs, repeats=repeats, warmup=1, clock=clock)
            mine = seconds[name] / B
            print(f"{d:>2}  {name:<44} {mine * 1e6:>8.1f} µs {'1.0':>8}  "
                  f"ok {int(result.ok.sum())}/{B}")
            slow = seconds[route] / B
            print(f"{d:>2}  {route:<44} {slow * 1e6:>8.1f} µs {slow / mine:>7.1f}x  "
                  "pure torch: what vmap, autograd and GPUs run")
            for peer, fit_one in group.items():
                theirs = seconds[peer] / subset
                coefs = [fit_one(Xn[b], yn[b]) for b in range(subset)]
                if group is lad_peers:
                    gaps = [lad_gap(Xn[b], yn[b], c, lad_fit.objective[b].item())
                            for b, c in enumerate(coefs)]
                    note = f"objective above the optimum by up to {max(gaps):.1e}"
                elif "RLM" in peer:
                    diff = max(np.abs(c - mine_huber[b]).max() / np.abs(mine_huber[b]).max()
                               for b, c in enumerate(coefs))
                    note = f"coefficients differ by up to {diff:.1e} (RLM tol 1e-8 on the deviance)"
                else:
                    note = "other scale estimator (joint σ), not comparable"
                print(f"{d:>2}  {peer:<44} {theirs * 1e6:>8.1f} µs {theirs / mine:>7.1f}x  {note}")
        print()


if __name__ == "__main__":
    main()
