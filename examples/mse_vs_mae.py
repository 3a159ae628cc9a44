"""MSE against MAE on data with one outlier: the source text's demonstration, corrected.

The source text prints MSE 1040.80, MAE 14.80 and outlier shares of ~97.3% / ~99.9%;
the arithmetic gives 1037.60, 15.20, 94.7% and 99.92%. This script computes and checks them.

Run: python examples/mse_vs_mae.py [--fast] [--out DIR]
"""

from __future__ import annotations

import argparse

import torch

import lossfn


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--fast", action="store_true", help="accepted for uniformity; already fast")
    parser.add_argument("--out", default=".", help="folder for pictures (none made here)")
    parser.parse_args(argv)

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
    assert abs(result["mse"] - 1037.6) < 1e-9 and abs(result["mae"] - 15.2) < 1e-9
    assert round(100 * result["outlier_share_abs"], 1) == 94.7
    assert round(100 * result["outlier_share_sq"], 2) == 99.92
    return result


if __name__ == "__main__":
    main()
