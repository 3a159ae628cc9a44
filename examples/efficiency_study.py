"""Efficiency of the mean, the median and Huber's estimate under three kinds of noise.

The source text's claims, checked by simulation: under Gaussian noise the mean (the
MLE) is best and the median has efficiency near 2/π; under Laplace noise the median
(the MLE) beats the mean; under contaminated noise, 0.9·N(0, 1) + 0.1·N(0, 3²), the
mean loses to Huber's estimate. The median's efficiency at finite m is compared with
its exact value, computed here from the density of the middle order statistic.

Prints one table per noise model, asserts the claims within the Monte Carlo standard
errors and saves a picture of the estimators' sampling distributions.

Run: python examples/efficiency_study.py [--fast] [--out DIR]
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path

import torch

import lossfn
from lossfn import location, montecarlo

M = 25
NOISES = {
    "Gaussian": lossfn.Gaussian(1.0),
    "Laplace": lossfn.Laplace(1.0),
    "contaminated": lossfn.Contaminated(0.1, 3.0),
}
ESTIMATORS = {"mean": "mean", "median": "median", "huber": "huber"}


def exact_median_variance(noise, m: int) -> float:
    r"""Var of the sample median, odd ``m``, by the trapezoidal rule on a fine grid.

    The middle order statistic ``k = (m+1)/2`` has density
    ``f_k(x) = F(x)^{k−1} (1 − F(x))^{m−k} f(x) / B(k, m−k+1)``.
    """
    k = (m + 1) // 2
    dist = noise.to_distribution()
    x = torch.linspace(-12.0, 12.0, 200_001, dtype=torch.float64)
    cdf = dist.cdf(x.to(torch.get_default_dtype())).double().clamp(1e-300, 1 - 1e-16)
    log_beta = math.lgamma(k) + math.lgamma(m - k + 1) - math.lgamma(m + 1)
    log_density = ((k - 1) * cdf.log() + (m - k) * torch.log1p(-cdf)
                   + dist.log_prob(x.to(torch.get_default_dtype())).double() - log_beta)
    return torch.trapezoid(x * x * log_density.exp(), x).item()


def sampling_distributions(noise, m: int, reps: int, seed: int) -> dict:
    """Estimates from ``reps`` fresh replicates, for the picture."""
    x = noise.sample((reps, m), generator=torch.Generator().manual_seed(seed),
                     dtype=torch.float64)
    return {"mean": location.mean(x), "median": location.median(x),
            "huber": location.huber_location(x).location}


def exact_median_efficiency(name: str, m: int) -> float:
    """Var(mean)/Var(median) at this m: σ²/m for the Gaussian, 2b²/m for the Laplace."""
    return (1.0 if name == "Gaussian" else 2.0) / m / exact_median_variance(NOISES[name], m)


def print_exact(name: str, study, m: int) -> None:
    if name in ("Gaussian", "Laplace"):
        med = study["median"]
        print(f"  median efficiency {med.efficiency.item():.3f} ± {med.efficiency_se.item():.3f}; "
              f"exact at m = {m}: {exact_median_efficiency(name, m):.3f}")


def check(name: str, study, m: int) -> None:
    med, hub = study["median"], study["huber"]
    if name in ("Gaussian", "Laplace"):
        exact = exact_median_efficiency(name, m)
        assert abs(med.efficiency.item() - exact) < 4 * med.efficiency_se.item(), (name, exact)
    if name == "Gaussian":
        assert med.efficiency.item() + 4 * med.efficiency_se.item() < 1  # the mean wins
        assert hub.efficiency.item() > 0.9
    if name == "Laplace":
        assert med.efficiency.item() - 4 * med.efficiency_se.item() > 1  # the median wins
    if name == "contaminated":
        assert hub.efficiency.item() - 4 * hub.efficiency_se.item() > 1  # Huber beats the mean


def plot(distributions: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(distributions), figsize=(4 * len(distributions), 3.2),
                             sharey=True)
    for ax, (noise, estimates) in zip(axes, distributions.items()):
        for label, values in estimates.items():
            ax.hist(values.numpy(), bins=80, range=(-1.2, 1.2), density=True,
                    histtype="step", label=f"{label} (var {values.var().item():.4f})")
        ax.set_title(f"{noise} noise, m = {M}")
        ax.set_xlabel("estimate of the location (truth 0)")
        ax.legend(fontsize=8)
    axes[0].set_ylabel("density")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--fast", action="store_true", help="fewer replicates (seconds)")
    parser.add_argument("--out", default=".", help="folder for the picture")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    reps = 6_000 if args.fast else 200_000
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)

    studies, distributions = {}, {}
    for name, noise in NOISES.items():
        # Under torchrun every rank computes a share and gets the whole, identical result.
        study = montecarlo.run(ESTIMATORS, noise, m=M, reps=reps, seed=args.seed)
        check(name, study, M)
        studies[name] = study
    if torch.distributed.is_initialized() and torch.distributed.get_rank() != 0:
        return {"studies": studies, "figure": None}  # one copy of the output is enough
    for name, noise in NOISES.items():
        print(f"\n== {name} noise ==\n{studies[name]}")
        print_exact(name, studies[name], M)
        distributions[name] = sampling_distributions(noise, M, min(reps, 20_000), args.seed + 1)
    path = out / "efficiency_study.png"
    plot(distributions, path)
    print(f"\nsaved {path}")
    return {"studies": studies, "figure": path}


if __name__ == "__main__":
    main()
