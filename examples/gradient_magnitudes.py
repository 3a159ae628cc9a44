"""Gradient magnitudes: how hard each point pulls under MSE, MAE and Huber, with one outlier.

A line ŷ = w·x + b at the true parameters (w = 2, b = 1) and 30 points
y = 1 + 2x + N(0, 0.1²), one of which is moved up by 8. For each loss the script
computes every point's own gradient with ``lossfn.per_sample_grads`` (vmap of grad)
and each point's share of the loss and of the pull on the predictions with
``lossfn.shares``, and checks them against the closed forms with r = ŷ − y:

    MSE    ∂ℓ/∂w = 2r·x,            ∂ℓ/∂b = 2r            (grows with the residual)
    MAE    ∂ℓ/∂w = sign(r)·x,       ∂ℓ/∂b = sign(r)       (the same size for every point)
    Huber  ∂ℓ/∂w = clip(r, ±δ)·x,   ∂ℓ/∂b = clip(r, ±δ)   (capped at δ)

Run: python examples/gradient_magnitudes.py [--fast] [--out DIR]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

import lossfn

DELTA = 0.3  # Huber's threshold, about 3σ of the clean noise


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--fast", action="store_true", help="accepted for uniformity; already fast")
    parser.add_argument("--out", default=".", help="folder for the picture (default: .)")
    args = parser.parse_args(argv)

    m, outlier = 30, 17
    generator = torch.Generator().manual_seed(0)
    x = torch.rand(m, 1, generator=generator, dtype=torch.float64)
    y = 1 + 2 * x + 0.1 * torch.randn(m, 1, generator=generator, dtype=torch.float64)
    y[outlier] += 8.0

    model = torch.nn.Linear(1, 1).double()
    with torch.no_grad():
        model.weight.fill_(2.0)
        model.bias.fill_(1.0)
    r = (model(x) - y).detach().squeeze(-1)  # ŷ − y
    xs = x.squeeze(-1)

    losses = {
        "mse": (lossfn.nn.MSELoss(), 2 * r),
        "mae": (lossfn.nn.MAELoss(), torch.sign(r)),
        "huber": (lossfn.nn.HuberLoss(delta=DELTA), r.clamp(-DELTA, DELTA)),
    }
    result = {}
    for name, (criterion, dl_dyhat) in losses.items():
        grads = lossfn.per_sample_grads(model, x, y, loss=criterion)
        # Closed forms, by hand: the chain rule through ŷ = w·x + b.
        assert torch.allclose(grads["weight"].reshape(m), dl_dyhat * xs, atol=1e-12), name
        assert torch.allclose(grads["bias"].reshape(m), dl_dyhat, atol=1e-12), name
        # The average of the per-sample gradients is the usual batch gradient.
        model.zero_grad()
        criterion(model(x), y).backward()
        assert torch.allclose(grads["weight"].mean(0), model.weight.grad, atol=1e-12), name
        share = lossfn.shares(model(x).detach().squeeze(-1), y.squeeze(-1), loss=name,
                              delta=DELTA)
        expected = dl_dyhat.abs() / dl_dyhat.abs().sum()
        assert torch.allclose(share.grad, expected, atol=1e-12), name
        norm = torch.sqrt(grads["weight"].reshape(m) ** 2 + grads["bias"].reshape(m) ** 2)
        result[name] = {"norm": norm, "grad_share": share.grad, "loss_share": share.loss}

    # What the picture claims.
    out_share = {k: v["grad_share"][outlier].item() for k, v in result.items()}
    assert out_share["mse"] > 0.5                                   # one point, most of the pull
    assert torch.allclose(result["mae"]["grad_share"], torch.full((m,), 1 / m, dtype=torch.float64))
    capped = DELTA * (1 + xs[outlier] ** 2).sqrt()                  # |∂ℓ/∂ŷ| = δ, times ‖(x, 1)‖
    assert torch.isclose(result["huber"]["norm"][outlier], capped, atol=1e-12)
    assert out_share["mae"] < out_share["huber"] < out_share["mse"]
    for name, share in out_share.items():
        print(f"{name:>5}: outlier's share of the pull on ŷ = {100 * share:5.1f}%   "
              f"of the loss = {100 * result[name]['loss_share'][outlier].item():5.1f}%")

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    figure = _draw(out / "gradient_magnitudes.png", result, outlier)
    return {"outlier_grad_share": out_share, "figure": str(figure)}


def _draw(path: Path, result: dict, outlier: int) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(13, 3.4), sharey=True)
    for ax, (name, values) in zip(axes, result.items()):
        norm = values["norm"]
        colors = ["tab:red" if i == outlier else "0.55" for i in range(len(norm))]
        ax.bar(range(len(norm)), norm.tolist(), color=colors)
        ax.set_yscale("log")
        share = 100 * values["grad_share"][outlier].item()
        ax.set_title(f"{name}: outlier pulls {share:.0f}% of the total", fontsize=10)
        ax.set_xlabel("point")
    axes[0].set_ylabel("‖per-sample gradient‖ (w, b)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


if __name__ == "__main__":
    main()
