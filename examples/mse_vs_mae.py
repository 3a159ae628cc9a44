"""MSE against MAE on data with one outlier: the source text's demonstration, corrected.

Four predictions miss by 1 and one misses an outlier by 72. The source text prints
MSE 1040.80, MAE 14.80 and outlier shares of ~97.3% / ~99.9%; the arithmetic gives
1037.60, 15.20, 94.7% and 99.92%. This script computes them with lossfn, checks them
against torch's own losses and exact fractions, and draws each point's share of the
squared and of the absolute error (examples/gradient_magnitudes.py does the gradients).

Run: python examples/mse_vs_mae.py [--fast] [--out DIR]
"""

from __future__ import annotations

import argparse
from fractions import Fraction
from pathlib import Path

import torch
import torch.nn.functional as F

import lossfn


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--fast", action="store_true", help="accepted for uniformity; already fast")
    parser.add_argument("--out", default=".", help="folder for the picture (default: .)")
    args = parser.parse_args(argv)

    actual = torch.tensor([85.0, 90.0, 88.0, 92.0, 15.0], dtype=torch.float64)
    predicted = torch.tensor([84.0, 89.0, 87.0, 91.0, 87.0], dtype=torch.float64)
    squared = lossfn.mse(predicted, actual, reduction="none")
    absolute = lossfn.mae(predicted, actual, reduction="none")
    result = {
        "mse": lossfn.mse(predicted, actual).item(),
        "mae": lossfn.mae(predicted, actual).item(),
        "outlier_share_abs": (absolute[4] / absolute.sum()).item(),
        "outlier_share_sq": (squared[4] / squared.sum()).item(),
    }
    print(f"MSE: {result['mse']:.2f}   (the source text prints 1040.80)")
    print(f"MAE: {result['mae']:.2f}     (the source text prints 14.80)")
    print(f"outlier share of the absolute error: {100 * result['outlier_share_abs']:.1f}%  (printed: ~97.3%)")
    print(f"outlier share of the squared error:  {100 * result['outlier_share_sq']:.2f}% (printed: ~99.9%)")

    # The claims, against independent arithmetic: torch's losses and exact fractions.
    assert result["mse"] == F.mse_loss(predicted, actual).item() == float(Fraction(5188, 5))
    assert result["mae"] == F.l1_loss(predicted, actual).item() == float(Fraction(76, 5))
    assert abs(result["outlier_share_abs"] - 72 / 76) < 1e-15
    assert abs(result["outlier_share_sq"] - 5184 / 5188) < 1e-15
    assert round(100 * result["outlier_share_abs"], 1) == 94.7
    assert round(100 * result["outlier_share_sq"], 2) == 99.92

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    result["figure"] = str(_draw(out / "mse_vs_mae.png", squared, absolute))
    return result


def _draw(path: Path, squared: torch.Tensor, absolute: torch.Tensor) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    points = [f"point {i + 1}" for i in range(4)] + ["outlier"]
    panels = [
        ("MSE: share of the squared error", squared / squared.sum()),
        ("MAE: share of the absolute error", absolute / absolute.sum()),
    ]
    fig, axes = plt.subplots(1, 2, figsize=(8, 3.4), sharey=True)
    for ax, (title, share) in zip(axes, panels):
        ax.bar(points, (100 * share).tolist(), color=["0.6"] * 4 + ["tab:red"])
        ax.set_title(title, fontsize=10)
        ax.tick_params(axis="x", labelrotation=45)
        for i, v in enumerate((100 * share).tolist()):
            ax.text(i, v + 1, f"{v:.1f}%", ha="center", fontsize=8)
    axes[0].set_ylabel("%")
    axes[0].set_ylim(0, 110)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


if __name__ == "__main__":
    main()
