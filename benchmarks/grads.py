"""Per-sample gradients and their norms against the peers, side by side in one run.

Models (float32): a linear model d -> 1 and an MLP d -> 256 -> 1 (ReLU), N samples,
mse loss. Every method computes each sample's gradient of its own loss:

- ``loop``: a Python loop of N ordinary backward passes on batches of one;
- ``opacus``: opacus ``GradSampleModule`` (hooks; loss_reduction="sum");
- ``vmap(grad)``: the torch.func tutorial recipe written out by hand;
- ``per_sample_grads``: :func:`lossfn.per_sample_grads` (its ``"outer"`` path for
  these models), and forced onto its ``vmap(grad)`` path (``method='vmap'``);
- ``norms (ghost)``: :func:`lossfn.per_sample_grad_norms` (ghost path, no N×P tensor);
- ``opacus ghost norms``: opacus ``GradSampleModuleFastGradientClipping`` (its
  backward also forms the ordinary gradient);
- ``norms (materialize)``: the same function forced to materialize the gradients;
- ``batched backward``: one ordinary forward + backward of the mean loss (the floor).

Prints the median over repeats of each, its ratio to one batched backward, and
the ratios the issue sets targets for. Usage::

    python benchmarks/grads.py            # N = 4096, d = 100
    python benchmarks/grads.py --quick    # small sizes, to check that it runs
    THP_MEM_ALLOC_ENABLE=1 python benchmarks/grads.py   # torch allocates on huge pages

Materialized per-sample gradients are N×P values (420 MB for the MLP), so on a
machine without transparent huge pages for torch's allocations the page faults of
that one output dominate every materializing method alike; torch's
``THP_MEM_ALLOC_ENABLE=1`` removes most of that cost. The header says which.
"""

from __future__ import annotations

import argparse
import copy
import os
import statistics
import time
import warnings

import torch
from torch import nn
from torch.func import functional_call, grad, vmap

import lossfn


def medians_ms(fns: dict, repeats: int, few: dict) -> dict:
    """Median time of each function; rounds interleave the methods so that they
    share the machine's load (it is noisy), and ``few`` caps slow ones' repeats."""
    times = {label: [] for label in fns}
    for fn in fns.values():
        fn()  # warm up
    for round_ in range(repeats):
        labels = list(fns)
        labels = labels[round_ % len(labels):] + labels[: round_ % len(labels)]
        for label in labels:
            if round_ >= few.get(label, repeats):
                continue
            start = time.perf_counter()
            fns[label]()
            times[label].append((time.perf_counter() - start) * 1e3)
    return {label: statistics.median(t) for label, t in times.items()}


def methods(model: nn.Module, x: torch.Tensor, y: torch.Tensor):
    from opacus import GradSampleModule
    from opacus.grad_sample import GradSampleModuleFastGradientClipping

    def loop():
        out = []
        for i in range(x.shape[0]):
            model.zero_grad(set_to_none=True)
            lossfn.mse(model(x[i : i + 1]), y[i : i + 1]).backward()
            out.append([p.grad.clone() for p in model.parameters()])
        return out

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        # A copy: opacus adds hooks to the modules it wraps, which the other methods must not run.
        gsm = GradSampleModule(copy.deepcopy(model), loss_reduction="sum")

    def opacus():
        for p in gsm.parameters():
            p.grad_sample = None
            p.grad = None
        # Summed per-sample mse: each sample's grad_sample is that sample's gradient.
        with warnings.catch_warnings():  # "no inputs require gradients": expected here
            warnings.simplefilter("ignore")
            lossfn.mse(gsm(x), y, reduction="sum").backward()
        return [p.grad_sample for p in gsm.parameters()]

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ghost_module = GradSampleModuleFastGradientClipping(
            copy.deepcopy(model), loss_reduction="sum", use_ghost_clipping=True)

    def opacus_norms():
        for p in ghost_module.parameters():
            p.grad = None
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            lossfn.mse(ghost_module(x), y, reduction="sum").backward()
        return ghost_module.get_norm_sample()

    params = {k: v.detach() for k, v in model.named_parameters()}

    def one(p, xi, yi):
        return lossfn.mse(functional_call(model, p, (xi.unsqueeze(0),)), yi.unsqueeze(0))

    raw = vmap(grad(one), in_dims=(None, 0, 0))

    def batched():
        model.zero_grad(set_to_none=True)
        lossfn.mse(model(x), y).backward()

    return {
        "loop": loop,
        "opacus": opacus,
        "vmap(grad)": lambda: raw(params, x, y),
        "per_sample_grads": lambda: lossfn.per_sample_grads(model, x, y),
        "  (method=vmap)": lambda: lossfn.per_sample_grads(model, x, y, method="vmap"),
        "norms (ghost)": lambda: lossfn.per_sample_grad_norms(model, x, y, method="ghost"),
        "opacus ghost norms": opacus_norms,
        "norms (materialize)": lambda: lossfn.per_sample_grad_norms(
            model, x, y, method="materialize"
        ),
        "batched backward": batched,
    }


def check_agree(model, x, y) -> None:
    """The timed methods must compute the same thing (else the table means nothing)."""
    g = lossfn.per_sample_grads(model, x, y)
    norms = lossfn.per_sample_grad_norms(model, x, y, method="ghost")
    ref = torch.stack([v.flatten(1).square().sum(1) for v in g.values()]).sum(0).sqrt()
    torch.testing.assert_close(norms, ref, rtol=1e-4, atol=1e-6)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes, few repeats")
    parser.add_argument("--n", type=int, default=None)
    parser.add_argument("--repeats", type=int, default=None)
    parser.add_argument("--threads", type=int, default=1,
                        help="torch threads (1 by default: on a shared machine, OpenMP "
                             "barriers of tiny multi-threaded ops stall when cores are busy)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    n = args.n or (256 if args.quick else 4096)
    d, hidden = (20, 32) if args.quick else (100, 256)
    repeats = args.repeats or (3 if args.quick else 11)
    loop_repeats = 1 if args.quick else 3
    torch.manual_seed(0)
    x = torch.randn(n, d)
    y = torch.randn(n, 1)
    models = {
        f"linear d={d}": nn.Linear(d, 1),
        f"MLP {d}->{hidden}->1": nn.Sequential(
            nn.Linear(d, hidden), nn.ReLU(), nn.Linear(hidden, 1)
        ),
    }
    print(f"N={n}, float32, mse, torch {torch.__version__}, threads={torch.get_num_threads()}, "
          f"median of {repeats} runs ({loop_repeats} for the loop), "
          f"THP_MEM_ALLOC_ENABLE={os.environ.get('THP_MEM_ALLOC_ENABLE', 'unset')}\n")
    header = f"{'method':<22}" + "".join(f"{name:>24}" for name in models)
    print(header + "\n" + " " * 22 + "".join(f"{'ms   (x backward)':>24}" for _ in models))
    results = {}
    for name, model in models.items():
        check_agree(model, x, y)
        results[name] = medians_ms(methods(model, x, y), repeats, {"loop": loop_repeats})
    for label in next(iter(results.values())):
        cells = ""
        for name in models:
            ms = results[name][label]
            cells += f"{ms:>14.2f} ({ms / results[name]['batched backward']:>6.1f}x)"
        print(f"{label:<22}{cells}")
    ratios = [
        ("opacus / per_sample_grads", "opacus", "per_sample_grads", ">= 2 on the MLP"),
        ("per_sample_grads / vmap(grad)", "per_sample_grads", "vmap(grad)", "<= 1.2"),
        ("  (method=vmap) / vmap(grad)", "  (method=vmap)", "vmap(grad)", "<= 1.2"),
        ("norms (ghost) / batched backward", "norms (ghost)", "batched backward",
         "<= 3 on the MLP"),
        ("opacus ghost norms / norms (ghost)", "opacus ghost norms", "norms (ghost)", ""),
        ("norms (materialize) / batched backward", "norms (materialize)", "batched backward",
         "about 23 in the issue"),
    ]
    print(f"\n{'ratio':<40}" + "".join(f"{name:>24}" for name in models) + "   target")
    for label, top, bottom, target in ratios:
        cells = "".join(f"{results[name][top] / results[name][bottom]:>24.2f}" for name in models)
        print(f"{label:<40}{cells}   {target}")


if __name__ == "__main__":
    main()
