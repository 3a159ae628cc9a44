"""10,000 datasets fitted in one call, timed against a loop.

Ten thousand independent lines y = α + βx + N(0, 0.5²), each with its own α, β and
between 20 and 60 points, are padded into one batch with a mask and fitted by one
call of ``lossfn.fit.ols``. The same fits, one dataset at a time, are timed in a
Python loop over ``fit.ols`` and over ``numpy.polyfit``. The script checks that all
three agree and that the batched slopes recover the true ones, and plots the timings
and the estimation errors.

Run: python examples/many_datasets.py [--fast] [--out DIR]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch

from lossfn import fit


def best_time(fn, repeats: int) -> float:
    """The fastest of ``repeats`` runs, in seconds (the least disturbed by other load)."""
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--fast", action="store_true", help="1,000 datasets, loops timed on 200")
    parser.add_argument("--out", default=".", help="folder for the picture (default: .)")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch intra-op threads (default 1: on a busy machine more threads "
                             "can make small batched calls far slower, which would distort the timing)")
    args = parser.parse_args(argv)
    previous_threads = torch.get_num_threads()
    torch.set_num_threads(args.threads)
    try:
        return _run(args)
    finally:
        torch.set_num_threads(previous_threads)


def _run(args) -> dict:

    datasets = 1_000 if args.fast else 10_000
    looped = 200 if args.fast else datasets  # the loops are slow: time them on a subset
    generator = torch.Generator().manual_seed(0)
    lengths = torch.randint(20, 61, (datasets,), generator=generator)
    width = int(lengths.max())
    mask = torch.arange(width) < lengths.unsqueeze(-1)
    alpha = torch.randn(datasets, generator=generator, dtype=torch.float64)
    beta = 2 * torch.randn(datasets, generator=generator, dtype=torch.float64)
    x = torch.rand(datasets, width, generator=generator, dtype=torch.float64) * 10
    y = alpha[:, None] + beta[:, None] * x + 0.5 * torch.randn(x.shape, generator=generator,
                                                               dtype=torch.float64)
    # Padding is never read: fill it with garbage to prove it.
    x = torch.where(mask, x, 1e30)
    y = torch.where(mask, y, float("nan"))

    batched = fit.ols(x, y, mask=mask)
    t_batched = best_time(lambda: fit.ols(x, y, mask=mask), repeats=9)

    sizes = lengths.tolist()
    xs = [x[i, : sizes[i]] for i in range(looped)]
    ys = [y[i, : sizes[i]] for i in range(looped)]
    xn = [v.numpy() for v in xs]
    yn = [v.numpy() for v in ys]
    t_loop = best_time(lambda: [fit.ols(a, b) for a, b in zip(xs, ys)], repeats=1) * datasets / looped
    t_numpy = best_time(lambda: [np.polyfit(a, b, 1) for a, b in zip(xn, yn)], repeats=1) * datasets / looped

    one_by_one = [fit.ols(a, b) for a, b in zip(xs, ys)]
    loop_slope = torch.stack([f.slope for f in one_by_one])
    numpy_slope = torch.tensor(np.array([np.polyfit(a, b, 1)[0] for a, b in zip(xn, yn)]))
    assert bool(batched.ok.all())
    assert torch.allclose(batched.slope[:looped], loop_slope, rtol=1e-10, atol=1e-12)
    assert torch.allclose(batched.slope[:looped], numpy_slope, rtol=1e-8, atol=1e-10)
    # The slopes recover the truth to within their own standard errors.
    z = (batched.slope - beta) / batched.stderr[:, 1]
    assert z.abs().max() < 6 and abs(z.std().item() - 1) < 0.1, (z.abs().max(), z.std())

    print(f"{datasets:,} datasets of 20–60 points (loops timed on {looped:,}, scaled up):")
    print(f"  fit.ols, one batched call : {1e3 * t_batched:9.2f} ms")
    print(f"  fit.ols in a Python loop  : {1e3 * t_loop:9.2f} ms  ({t_loop / t_batched:,.0f}× slower)")
    print(f"  numpy.polyfit in a loop   : {1e3 * t_numpy:9.2f} ms  ({t_numpy / t_batched:,.0f}× slower)")

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    figure = _draw(out / "many_datasets.png", {"batched fit.ols": t_batched,
                                               "loop of fit.ols": t_loop,
                                               "loop of np.polyfit": t_numpy}, z)
    return {"datasets": datasets, "batched_s": t_batched, "loop_s": t_loop, "numpy_s": t_numpy,
            "figure": str(figure)}


def _draw(path: Path, times: dict, z: torch.Tensor) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 3.4))
    names = list(times)
    axes[0].barh(names, [1e3 * t for t in times.values()], color=["tab:green", "0.5", "0.7"])
    axes[0].set_xscale("log")
    axes[0].set_xlabel("time for all datasets (ms, log scale)")
    axes[0].invert_yaxis()
    grid = np.linspace(-4, 4, 200)
    axes[1].hist(z.numpy(), bins=60, density=True, color="0.6", label="(β̂ − β)/se(β̂)")
    axes[1].plot(grid, np.exp(-grid**2 / 2) / np.sqrt(2 * np.pi), "k", label="N(0, 1)")
    axes[1].legend(fontsize=8)
    axes[1].set_title(f"{len(z):,} slopes, standardized errors", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


if __name__ == "__main__":
    main()
