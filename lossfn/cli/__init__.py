"""The ``lossfn`` command line: ``lossfn fit`` and ``lossfn simulate``.

``lossfn fit`` turns the library's idea — choosing a loss is choosing a noise
model — into a decision for each group of a CSV file; ``lossfn simulate``
prints the Monte Carlo efficiency table of the location estimators. Bad input
gives one line on stderr and exit code 2, never a traceback.

Example:
    >>> from lossfn.cli import build_parser
    >>> args = build_parser().parse_args(["fit", "data.csv", "--x", "dose", "--y", "response"])
    >>> args.data, args.x, args.y, args.group, args.delta
    ('data.csv', 'dose', 'response', None, 1.345)
"""

from __future__ import annotations

import argparse
import math
import sys
from typing import Optional, Sequence

from ._errors import CLIError

__all__ = ["CLIError", "build_parser", "main"]

_FIT_EXAMPLES = """\
examples:
  lossfn fit
      the sample dataset shipped with lossfn: 5 groups, some with outliers
  lossfn fit data.csv --x dose --y response --group site
  lossfn fit data.csv --x dose --y response --group site --out results.json --plot fits.png
  lossfn fit data.csv --x t --y temp --out results.csv --quiet

For each group the line y = a + b·x is fitted by OLS (Gaussian MLE), LAD (Laplace MLE)
and Huber regression. Each model's residuals are scored by their maximized
log-likelihood (scale at its MLE); AIC = 2k − 2·loglik with k = 3 (intercept, slope,
scale). The recommended loss is that of the lowest AIC: mse (Gaussian), mae (Laplace)
or huber. Rows with a missing value are dropped (the count is stated); groups with
fewer than 3 points are reported with ok=false.
"""

_SIMULATE_EXAMPLES = """\
examples:
  lossfn simulate
  lossfn simulate --m 101 --reps 20000 --seed 1
  lossfn simulate --noise gaussian laplace --out efficiency.json

Draws reps samples of m points from each noise model and reports, for the mean,
the median and Huber's location estimate, the bias, variance and mean squared error
with their Monte Carlo standard errors, and the efficiency relative to the mean.
"""


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the ``lossfn`` command (subcommands ``fit``, ``simulate``)."""
    parser = argparse.ArgumentParser(
        prog="lossfn",
        description="Regression losses as negative log-likelihoods: pick the loss your noise calls for.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="examples:\n  lossfn fit\n  lossfn fit data.csv --x dose --y response --group site"
               "\n  lossfn simulate --m 50 --reps 10000\n\nlossfn COMMAND --help shows more.",
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    fit = commands.add_parser(
        "fit",
        help="fit lines by OLS, LAD and Huber per group and recommend a loss",
        description="Fit every group at once by OLS, LAD and Huber and recommend the loss "
                    "whose noise model fits the residuals best.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=_FIT_EXAMPLES,
    )
    fit.add_argument("data", nargs="?", metavar="DATA.csv",
                     help="CSV file with a header line (default: the sample dataset)")
    fit.add_argument("--x", default=None, metavar="COL", help="column of x (default: x)")
    fit.add_argument("--y", default=None, metavar="COL", help="column of y (default: y)")
    fit.add_argument("--group", default=None, metavar="COL",
                     help="column naming the group of each row (default: one group; "
                          "'group' for the sample data)")
    fit.add_argument("--delta", type=float, default=1.345,
                     help="Huber's threshold in units of the noise scale (default: 1.345)")
    fit.add_argument("--out", metavar="FILE", help="write the results to FILE (.json or .csv)")
    fit.add_argument("--plot", metavar="FILE", help="save a figure of the fits (.png, .pdf or .svg)")
    fit.add_argument("--quiet", action="store_true", help="do not print the table")
    fit.add_argument("--progress", dest="progress", action="store_true", default=None,
                     help="always show a progress bar (default: only for long runs)")
    fit.add_argument("--no-progress", dest="progress", action="store_false",
                     help="never show a progress bar")
    fit.set_defaults(run=_run_fit)

    simulate = commands.add_parser(
        "simulate",
        help="Monte Carlo efficiency of the mean, median and Huber location",
        description="Monte Carlo efficiency table of location estimators under each noise model.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=_SIMULATE_EXAMPLES,
    )
    simulate.add_argument("--noise", nargs="+", default=["gaussian", "laplace", "contaminated"],
                          choices=["gaussian", "laplace", "huber", "contaminated"],
                          help="noise models to draw from (default: gaussian laplace contaminated)")
    simulate.add_argument("--m", type=int, default=25, help="points per sample (default: 25)")
    simulate.add_argument("--reps", type=int, default=20_000, help="replicates (default: 20000)")
    simulate.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")
    simulate.add_argument("--out", metavar="FILE", help="write the table to FILE (.json or .csv)")
    simulate.add_argument("--quiet", action="store_true", help="do not print the table")
    simulate.add_argument("--progress", action="store_true", help="show a progress bar")
    simulate.set_defaults(run=_run_simulate)
    return parser


def _say(line: str) -> None:
    print(f"lossfn: {line}", file=sys.stderr)


def _run_fit(args: argparse.Namespace) -> int:
    from . import _fit, _output, _table

    if not (args.delta > 0 and math.isfinite(args.delta)):
        raise CLIError(f"--delta must be a number > 0, got {args.delta}.")
    out = _output.check_destination(args.out, "--out", _output.OUTPUT_FORMATS) if args.out else None
    plot = (_output.check_destination(args.plot, "--plot", (".png", ".pdf", ".svg"))
            if args.plot else None)
    if args.data is None:
        table = _table.read_sample()
        group = args.group or "group"
    else:
        table = _table.read_csv(args.data)
        group = args.group
    groups = _table.select_groups(table, x=args.x or "x", y=args.y or "y", group=group)
    if groups.dropped:
        _say(f"dropped {groups.dropped} row{'s' if groups.dropped != 1 else ''} with a "
             f"missing value (of {len(table.rows)}).")
    for note in _fit.check_fittable(groups):
        _say(note)
    failures: list = []
    records = _fit.fit_groups(groups, delta=args.delta, progress=args.progress, notes=failures)
    for note in failures:
        _say(note)
    if not args.quiet:
        print(_fit.format_table(records))
    if out is not None:
        _output.write_records(out, records, _fit.flatten)
    if plot is not None:
        from ._plot import draw_fits

        _output.write_plot(plot, lambda plt: draw_fits(plt, groups, records))
    return 0


def _run_simulate(args: argparse.Namespace) -> int:
    from . import _output, _simulate

    if args.m < 1:
        raise CLIError(f"--m must be at least 1, got {args.m}.")
    if args.reps < 2:
        raise CLIError(f"--reps must be at least 2 (variances need two replicates), got {args.reps}.")
    out = _output.check_destination(args.out, "--out", _output.OUTPUT_FORMATS) if args.out else None
    rows = _simulate.efficiency_table(
        args.noise, m=args.m, reps=args.reps, seed=args.seed, progress=args.progress
    )
    if not args.quiet:
        print(_simulate.format_rows(rows))
    if out is not None:
        _output.write_records(out, rows, dict)
    return 0


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Run the ``lossfn`` command with ``argv`` (default: ``sys.argv[1:]``); return the exit code.

    Bad input prints one line on stderr and returns 2; argparse usage errors
    exit with 2 as usual.
    """
    parser = build_parser()
    args = parser.parse_args(None if argv is None else list(argv))
    try:
        return args.run(args)
    except CLIError as err:
        _say(f"{args.command}: {err}")
        return 2
    except KeyboardInterrupt:
        _say("interrupted.")
        return 130
