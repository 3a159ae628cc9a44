"""Forward+backward time of lossfn's losses against torch's built-ins, side by side.

Prints one table: median milliseconds over interleaved repeats, and the ratio to the
peer (target: ≤ 1.10× the built-in; the NLLs with a scalar scale ≤ 1.3× the plain loss).

Run: python benchmarks/losses.py [--quick] [--n N] [--repeats R]
"""

from __future__ import annotations

import argparse
import os
import sys

import torch
import torch.nn.functional as F

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:0] = [HERE, os.path.dirname(HERE)]  # the clone's lossfn and the timing helpers
import lossfn  # noqa: E402
from _timing import interleaved_medians  # noqa: E402


def fwd_bwd(loss_fn, pred, target):
    def run():
        p = pred.detach().requires_grad_()
        loss_fn(p, target).backward()
    return run


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="1e5 elements, few repeats")
    parser.add_argument("--n", type=float, default=1e7)
    parser.add_argument("--repeats", type=int, default=21)
    args = parser.parse_args(argv)
    n = int(1e5 if args.quick else args.n)
    repeats = 5 if args.quick else args.repeats
    gen = torch.Generator().manual_seed(0)
    pred = torch.randn(n, generator=gen)
    target = torch.randn(n, generator=gen) * 2

    rows = [  # (ours, peer, target ratio)
        ("lossfn.mse", lossfn.mse, "F.mse_loss", F.mse_loss, 1.10),
        ("lossfn.mae", lossfn.mae, "F.l1_loss", F.l1_loss, 1.10),
        ("lossfn.huber", lossfn.huber, "F.huber_loss", F.huber_loss, 1.10),
        ("gaussian_nll(scale=2.0)", lambda p, t: lossfn.gaussian_nll(p, t, scale=2.0),
         "lossfn.mse", lossfn.mse, 1.30),
        ("laplace_nll(scale=2.0)", lambda p, t: lossfn.laplace_nll(p, t, scale=2.0),
         "lossfn.mae", lossfn.mae, 1.30),
        ("huber_nll(delta=1.345, scale=2.0)", lambda p, t: lossfn.huber_nll(p, t, scale=2.0),
         "lossfn.huber", lossfn.huber, 1.30),
        ("huber(delta=tensor)", lambda p, t: lossfn.huber(p, t, delta=torch.tensor(1.0)),
         "F.huber_loss", F.huber_loss, None),
        ("gaussian_nll(scale=tensor)", lambda p, t: lossfn.gaussian_nll(p, t, scale=torch.tensor(2.0)),
         "lossfn.mse", lossfn.mse, None),
    ]
    print(f"forward+backward, {n:.0e} float32 elements, torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads, median of {repeats} interleaved runs")
    for _, ours, _, peer, _ in rows:  # warm the allocator and kernels before any timing
        for _ in range(3):
            fwd_bwd(ours, pred, target)()
            fwd_bwd(peer, pred, target)()
    print(f"{'ours':36s} {'ms':>8s}   {'peer':14s} {'ms':>8s}  {'ratio':>6s}  target")
    for name, ours, peer_name, peer, goal in rows:
        t = interleaved_medians({"ours": fwd_bwd(ours, pred, target),
                                 "peer": fwd_bwd(peer, pred, target)}, repeats=repeats)
        ratio = t["ours"] / t["peer"]
        verdict = "(info)" if goal is None else (f"≤{goal:.2f} " + ("met" if ratio <= goal else "MISSED"))
        print(f"{name:36s} {1e3 * t['ours']:8.2f}   {peer_name:14s} {1e3 * t['peer']:8.2f}  {ratio:6.3f}  {verdict}")


if __name__ == "__main__":
    main()
