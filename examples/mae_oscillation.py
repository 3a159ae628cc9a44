"""MAE's constant-size gradient: with a fixed learning rate MAE keeps oscillating, MSE settles.

Gradient descent on one location parameter μ from m points, full batch, fixed
learning rate η. The MSE gradient (2/m)·Σ(μ − y_i) shrinks with the distance to the
optimum (the mean), so μ converges geometrically, factor |1 − 2η| per step. The MAE
(sub)gradient (1/m)·Σ sign(μ − y_i) has size 1/m however close μ is to the optimum
(the median, m odd), so μ hops across it by η/m forever. The script checks both
claims numerically and plots the traces and the distance to the optimum.

Run: python examples/mae_oscillation.py [--fast] [--out DIR]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

import lossfn


def descend(loss, y: torch.Tensor, *, start: float, lr: float, steps: int) -> torch.Tensor:
    """The iterates μ_0 … μ_steps of gradient descent on ``loss(μ·1, y)`` (torch autograd)."""
    mu = torch.tensor(start, dtype=y.dtype, requires_grad=True)
    optimizer = torch.optim.SGD([mu], lr=lr)
    trace = [mu.detach().clone()]
    for _ in range(steps):
        optimizer.zero_grad()
        loss(mu.expand_as(y), y).backward()
        optimizer.step()
        trace.append(mu.detach().clone())
    return torch.stack(trace)


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--fast", action="store_true", help="fewer steps (for CI)")
    parser.add_argument("--out", default=".", help="folder for the picture (default: .)")
    args = parser.parse_args(argv)

    m, lr = 11, 0.1
    steps = 250 if args.fast else 1000
    generator = torch.Generator().manual_seed(0)
    y = 3.0 + torch.randn(m, generator=generator, dtype=torch.float64)
    mean, median = y.mean(), y.sort().values[m // 2]

    mse_trace = descend(lossfn.mse, y, start=0.0, lr=lr, steps=steps)
    mae_trace = descend(lossfn.mae, y, start=0.0, lr=lr, steps=steps)
    tail = slice(-50, None)
    mse_distance = (mse_trace - mean).abs()
    mae_distance = (mae_trace - median).abs()
    mae_steps = mae_trace.diff().abs()

    # MSE settles: the distance contracts by |1 − 2η| each step, to rounding level.
    assert mse_distance[-1] <= 1e-12 * (1 + mean.abs()), mse_distance[-1]
    ratio = mse_distance[1:30] / mse_distance[:29]
    assert torch.allclose(ratio, torch.full_like(ratio, 1 - 2 * lr)), ratio
    # MAE does not: every late step has size exactly η/m, and μ keeps crossing the median.
    assert torch.allclose(mae_steps[tail], torch.full_like(mae_steps[tail], lr / m)), mae_steps[tail]
    side = torch.sign(mae_trace[tail] - median)
    assert (side[1:] != side[:-1]).sum() >= 45, side
    assert mae_distance[tail].max() <= lr / m + 1e-12

    print(f"m = {m}, learning rate {lr}, {steps} steps")
    print(f"MSE: |μ − mean|   after {steps} steps = {mse_distance[-1].item():.2e} (settled)")
    print(f"MAE: |μ − median| over the last 50 steps: {mae_distance[tail].min().item():.2e} … "
          f"{mae_distance[tail].max().item():.2e}, every step of size η/m = {lr / m:.4f} (oscillating)")

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    figure = _draw(out / "mae_oscillation.png", mse_trace, mae_trace, mean, median, lr, m)
    return {"mse_final_distance": mse_distance[-1].item(),
            "mae_late_step": mae_steps[-1].item(), "figure": str(figure)}


def _draw(path, mse_trace, mae_trace, mean, median, lr, m) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(14, 3.6))
    axes[0].plot(mse_trace, label="MSE: μ_t")
    axes[0].plot(mae_trace, label="MAE: μ_t")
    axes[0].axhline(mean.item(), color="tab:blue", linestyle="--", linewidth=0.8, label="mean")
    axes[0].axhline(median.item(), color="tab:orange", linestyle="--", linewidth=0.8, label="median")
    axes[0].set(title="iterates", xlabel="step")
    axes[0].legend(fontsize=8)
    window = slice(-40, None)
    steps = torch.arange(len(mae_trace))[window]
    axes[1].plot(steps, (mae_trace[window] - median), "o-", color="tab:orange", markersize=3)
    axes[1].plot(steps, (mse_trace[window] - mean), "o-", color="tab:blue", markersize=3)
    axes[1].axhline(0.0, color="k", linewidth=0.6)
    axes[1].set(title=f"last 40 steps: MAE hops by η/m = {lr / m:.3f}", xlabel="step",
                ylabel="μ_t − optimum")
    axes[2].semilogy((mse_trace - mean).abs().clamp(min=1e-17), label="MSE: |μ_t − mean|")
    axes[2].semilogy((mae_trace - median).abs().clamp(min=1e-17), label="MAE: |μ_t − median|")
    axes[2].set(title="distance to the optimum", xlabel="step")
    axes[2].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


if __name__ == "__main__":
    main()
