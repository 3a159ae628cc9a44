"""Robust line fits: OLS against LAD against Huber on contaminated data, in one figure.

y = 1 + 2x + N(0, 0.5²) for m = 200 points, then 15% of them are moved up by 8–15
(gross errors in y). OLS — the Gaussian MLE — is dragged towards the outliers;
LAD (the Laplace MLE) and Huber's M-estimator stay with the bulk. The script checks
that, and that each robust fit is what it claims to be: the LAD line has the
smallest sum of absolute residuals (against the other lines and small moves of its
own), and the Huber line solves its estimating equations Σ ψ_δ(r/s)·(1, x) = 0.

Run: python examples/robust_lines.py [--fast] [--out DIR]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from lossfn import fit

TRUE_INTERCEPT, TRUE_SLOPE, DELTA = 1.0, 2.0, 1.345


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--fast", action="store_true", help="accepted for uniformity; already fast")
    parser.add_argument("--out", default=".", help="folder for the picture (default: .)")
    args = parser.parse_args(argv)

    m = 200
    g = torch.Generator().manual_seed(3)
    x = 10 * torch.rand(m, generator=g, dtype=torch.float64)
    y = TRUE_INTERCEPT + TRUE_SLOPE * x + 0.5 * torch.randn(m, generator=g, dtype=torch.float64)
    outlier = torch.zeros(m, dtype=torch.bool)
    outlier[torch.randperm(m, generator=g)[: int(0.15 * m)]] = True
    y = torch.where(outlier, y + 8 + 7 * torch.rand(m, generator=g, dtype=torch.float64), y)

    fits = {"OLS": fit.ols(x, y), "LAD": fit.lad(x, y), "Huber": fit.huber(x, y, delta=DELTA)}
    assert all(bool(f.ok) for f in fits.values())
    lines = {k: (f.intercept.item(), f.slope.item()) for k, f in fits.items()}
    error = {k: abs(b - TRUE_SLOPE) + abs(a - TRUE_INTERCEPT) for k, (a, b) in lines.items()}
    # OLS is dragged; the robust fits stay with the bulk of the data.
    assert error["OLS"] > 3 * max(error["LAD"], error["Huber"]), error
    assert max(error["LAD"], error["Huber"]) < 0.5, error

    def sum_abs(a, b):
        return (y - a - b * x).abs().sum().item()

    best = sum_abs(*lines["LAD"])
    a, b = lines["LAD"]
    for other in (lines["OLS"], lines["Huber"], (a + 1e-3, b), (a - 1e-3, b), (a, b + 1e-4),
                  (a, b - 1e-4), (TRUE_INTERCEPT, TRUE_SLOPE)):
        assert best <= sum_abs(*other) + 1e-9, (other, best)
    a, b = lines["Huber"]
    scale = fits["Huber"].scale
    psi = ((y - a - b * x) / scale).clamp(-DELTA, DELTA)
    assert abs(psi.sum().item()) < 1e-5 * m and abs((psi * x).sum().item()) < 1e-4 * m, (
        psi.sum(), (psi * x).sum())

    for name, (a, b) in lines.items():
        print(f"{name:>5}: intercept {a:6.3f}  slope {b:6.3f}   (true {TRUE_INTERCEPT}, {TRUE_SLOPE})")

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    figure = _draw(out / "robust_lines.png", x, y, outlier, lines)
    return {"lines": lines, "figure": str(figure)}


def _draw(path: Path, x, y, outlier, lines) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.5, 4.2))
    ax.scatter(x[~outlier], y[~outlier], s=10, color="0.5", label="data")
    ax.scatter(x[outlier], y[outlier], s=14, color="tab:red", label="gross errors (15%)")
    grid = torch.tensor([0.0, 10.0], dtype=torch.float64)
    ax.plot(grid, TRUE_INTERCEPT + TRUE_SLOPE * grid, "k--", linewidth=1, label="true line")
    for (name, (a, b)), style in zip(lines.items(), ("-", "-.", ":")):
        ax.plot(grid, a + b * grid, style, linewidth=2, label=f"{name}: {a:.2f} + {b:.2f}x")
    ax.set(xlabel="x", ylabel="y", title="OLS vs LAD vs Huber under contamination")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


if __name__ == "__main__":
    main()
