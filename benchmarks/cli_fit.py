"""Benchmark of ``lossfn fit``'s engine: all groups in one batch against one group at a time.

For G groups of 20–80 points, times :func:`lossfn.cli._fit.fit_groups` on the padded
batch (what ``lossfn fit`` does) against a loop that calls it once per group, and
the scoring step alone (:func:`lossfn.select.compare_noise`) batched against a loop.
Prints medians over repeats and the ratio loop / batched, measured side by side.

Run: python benchmarks/cli_fit.py [--quick] [--repeats N] [--threads N]
"""

from __future__ import annotations

import argparse
import os
import sys

import torch

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:0] = [HERE, os.path.dirname(HERE)]  # the clone's lossfn and the timing helpers

from _timing import median_time  # noqa: E402
from lossfn.cli._fit import fit_groups  # noqa: E402
from lossfn.cli._table import Groups  # noqa: E402
from lossfn.select import compare_noise  # noqa: E402


def make_groups(count: int, seed: int = 0) -> Groups:
    g = torch.Generator().manual_seed(seed)
    lengths = torch.randint(20, 81, (count,), generator=g)
    width = int(lengths.max())
    mask = torch.arange(width) < lengths.unsqueeze(-1)
    x = 10 * torch.rand(count, width, generator=g, dtype=torch.float64)
    noise = torch.distributions.StudentT(3.0).sample((count, width))
    y = torch.where(mask, 1 + 2 * x + noise.to(torch.float64), 0.0)
    x = torch.where(mask, x, 0.0)
    return Groups(tuple(f"g{i}" for i in range(count)), x, y, mask, 0)


def one(groups: Groups, i: int) -> Groups:
    n = int(groups.mask[i].sum())
    return Groups((groups.names[i],), groups.x[i:i + 1, :n], groups.y[i:i + 1, :n],
                  groups.mask[i:i + 1, :n], 0)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes, few repeats")
    parser.add_argument("--repeats", type=int, default=None)
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads (default 1)")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    sizes = (10, 50) if args.quick else (10, 100, 1000)
    repeats = args.repeats or (3 if args.quick else 7)

    print(f"torch {torch.__version__}, {torch.get_num_threads()} thread(s), median of {repeats}")
    header = f"{'step':<16}{'groups':>7}{'batched ms':>12}{'loop ms':>11}{'loop/batched':>14}"
    print(header)
    print("-" * len(header))
    for count in sizes:
        groups = make_groups(count)
        singles = [one(groups, i) for i in range(count)]
        batched = median_time(lambda: fit_groups(groups, progress=False), repeats=repeats, warmup=1)
        looped = median_time(lambda: [fit_groups(s, progress=False) for s in singles], repeats=repeats, warmup=1)
        print(f"{'lossfn fit':<16}{count:>7}{1e3 * batched:>12.2f}{1e3 * looped:>11.2f}"
              f"{looped / batched:>13.1f}×")
        residuals = groups.y - groups.y.mean(-1, keepdim=True)
        rows = [residuals[i, : int(groups.mask[i].sum())] for i in range(count)]
        batched = median_time(lambda: compare_noise(residuals, mask=groups.mask), repeats=repeats, warmup=1)
        looped = median_time(lambda: [compare_noise(r) for r in rows], repeats=repeats, warmup=1)
        print(f"{'compare_noise':<16}{count:>7}{1e3 * batched:>12.2f}{1e3 * looped:>11.2f}"
              f"{looped / batched:>13.1f}×")


if __name__ == "__main__":
    main()
