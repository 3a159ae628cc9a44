"""The source text's training example: SGD on y = 1 + 2x + N(0, 0.1²) converges to OLS.

A linear model ŷ = w·x + b is trained with MSE and plain SGD (learning rate 0.1,
1000 epochs, one full batch of m = 100 points per epoch, as in the text). The script
checks that the weights converge to the closed-form OLS fit of the same data
(``lossfn.fit.ols``, the Gaussian MLE) and that the loss approaches the noise floor:
the mean squared residual of the OLS line, itself close to σ² = 0.01. It draws the
text's three panels: slope, bias and loss traces with the true values dashed.

Run: python examples/training_trace.py [--fast] [--out DIR]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

import lossfn
from lossfn import fit

TRUE_SLOPE, TRUE_BIAS, NOISE_SD = 2.0, 1.0, 0.1


def train(x: torch.Tensor, y: torch.Tensor, *, lr: float, epochs: int, seed: int = 0):
    """SGD on the MSE of a ``torch.nn.Linear(1, 1)``; returns the traces (w, b, loss)."""
    torch.manual_seed(seed)  # the Linear layer's initial weights, as in the source text
    model = torch.nn.Linear(1, 1)
    optimizer = torch.optim.SGD(model.parameters(), lr=lr)
    traces = {"slope": [], "bias": [], "loss": []}
    for _ in range(epochs):
        loss = lossfn.mse(model(x).squeeze(-1), y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        traces["slope"].append(model.weight.item())
        traces["bias"].append(model.bias.item())
        traces["loss"].append(loss.item())
    return {k: torch.tensor(v, dtype=torch.float64) for k, v in traces.items()}


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--fast", action="store_true", help="accepted for uniformity; already fast")
    parser.add_argument("--out", default=".", help="folder for the picture (default: .)")
    args = parser.parse_args(argv)

    m, lr, epochs = 100, 0.1, 1000
    generator = torch.Generator().manual_seed(1)
    x = torch.rand(m, generator=generator)
    y = TRUE_BIAS + TRUE_SLOPE * x + NOISE_SD * torch.randn(m, generator=generator)

    traces = train(x.unsqueeze(-1), y, lr=lr, epochs=epochs)
    ols = fit.ols(x.double(), y.double())
    slope, bias, floor = ols.slope.item(), ols.intercept.item(), ols.sigma2.item()

    # SGD converges to the Gaussian MLE of the same data …
    assert abs(traces["slope"][-1] - slope) < 1e-3, (traces["slope"][-1], slope)
    assert abs(traces["bias"][-1] - bias) < 1e-3, (traces["bias"][-1], bias)
    # … and the loss to the noise floor: the OLS mean squared residual, near σ² = 0.01
    # (its sampling sd is σ²·√(2/m) ≈ 0.0014 here).
    assert abs(traces["loss"][-1] - floor) < 1e-5, (traces["loss"][-1], floor)
    assert abs(floor - NOISE_SD**2) < 4 * NOISE_SD**2 * (2 / m) ** 0.5, floor
    # The loss never goes up: a full-batch step on a quadratic with a small enough lr.
    assert bool((traces["loss"].diff() <= 1e-7).all())

    print(f"after {epochs} epochs: w = {traces['slope'][-1]:.4f} (OLS {slope:.4f}, true {TRUE_SLOPE}), "
          f"b = {traces['bias'][-1]:.4f} (OLS {bias:.4f}, true {TRUE_BIAS})")
    print(f"final loss {traces['loss'][-1]:.5f}; noise floor (OLS mean squared residual) "
          f"{floor:.5f}; σ² = {NOISE_SD**2:g}")

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    figure = _draw(out / "training_trace.png", traces, slope, bias, floor)
    return {"slope": traces["slope"][-1].item(), "bias": traces["bias"][-1].item(),
            "ols_slope": slope, "ols_bias": bias, "figure": str(figure)}


def _draw(path: Path, traces, slope, bias, floor) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(12, 3.2))
    panels = [("slope", TRUE_SLOPE, slope, "estimated slope"),
              ("bias", TRUE_BIAS, bias, "estimated bias"),
              ("loss", NOISE_SD**2, floor, "loss (MSE)")]
    for ax, (key, true, closed_form, label) in zip(axes, panels):
        ax.plot(traces[key], label=label)
        ax.axhline(true, color="r", linestyle="--", label="true" if key != "loss" else "σ² = 0.01")
        ax.axhline(closed_form, color="k", linestyle=":", linewidth=1,
                   label="fit.ols" if key != "loss" else "OLS residual MSE")
        ax.set_xlabel("epoch")
        ax.legend(fontsize=8)
    axes[2].set_yscale("log")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


if __name__ == "__main__":
    main()
