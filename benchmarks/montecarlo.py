"""The Monte Carlo engine against a bare torch loop and numpy, side by side in one run.

The study: ``reps`` replicates of ``m = 25`` standard normal points (float32), mean
and median of each, and the mean and variance of both estimators over the replicates
(float64 accumulation). Variants:

- ``montecarlo.run``: :func:`lossfn.montecarlo.run` with ``chunk_size=100_000``
  (blocks of 8192 with their own generators, co-moments up to order 4, standard errors);
- ``bare torch``: a chunked loop of ``randn``, ``mean``, ``median`` and float64 sums of
  the estimates and their squares, 100 000 replicates per chunk, one generator;
- ``numpy``: the same loop with ``Generator.standard_normal``, ``mean``, ``median``;
- ``bare, lossfn median``: the bare torch loop with :func:`lossfn.location.median` (the
  engine's median), so that the engine's own overhead shows;
- ``torch all at once``: the bare loop with one chunk of every replicate (the memory
  reference).

Time: median over repeats, the variants interleaved so they share the machine's load.
Memory: each variant runs again in fresh subprocesses (median of three). After the imports and a small
warm-up run it resets the kernel's peak-RSS mark (``/proc/self/clear_refs``), runs the
study and reports the peak resident set (``VmHWM``) minus the resident set before the
study. torch allocates through the system allocator on the CPU, so tracemalloc does not
see its tensors, but the resident set does. glibc's mmap threshold is fixed at 1 MiB in
the children (``MALLOC_MMAP_THRESHOLD_``), so every large buffer is returned to the system
when freed and the peak measures live memory, not what the allocator kept. (Elsewhere than Linux it falls back to
``ru_maxrss``, which also counts the imports' peak.)

Usage::

    python benchmarks/montecarlo.py            # reps = 1 000 000
    python benchmarks/montecarlo.py --quick    # reps = 100 000, to check that it runs
    python benchmarks/montecarlo.py --threads 1 --clock cpu   # steadier on a shared machine
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the checkout's lossfn

import lossfn  # noqa: E402
from lossfn import montecarlo  # noqa: E402

M = 25
CHUNK = 100_000


def engine(reps: int, chunk: int = CHUNK) -> None:
    montecarlo.run({"mean": "mean", "median": "median"}, lossfn.Gaussian(1.0), m=M, reps=reps,
                   chunk_size=chunk, dtype=torch.float32)


def bare_torch(reps: int, chunk: int = CHUNK, median=lambda x: x.median(-1).values) -> None:
    g = torch.Generator().manual_seed(0)
    sums = torch.zeros(2, 2, dtype=torch.float64)
    for start in range(0, reps, chunk):
        x = torch.randn(min(chunk, reps - start), M, generator=g)
        est = torch.stack([x.mean(-1), median(x)]).double()
        sums += torch.stack([est.sum(-1), (est * est).sum(-1)], dim=-1)


def numpy_loop(reps: int, chunk: int = CHUNK) -> None:
    rng = np.random.default_rng(0)
    sums = np.zeros((2, 2))
    for start in range(0, reps, chunk):
        x = rng.standard_normal((min(chunk, reps - start), M), dtype=np.float32)
        est = np.stack([x.mean(-1), np.median(x, axis=-1)]).astype(np.float64)
        sums += np.stack([est.sum(-1), (est * est).sum(-1)], axis=-1)


VARIANTS = {
    "montecarlo.run": engine,
    "bare torch": bare_torch,
    "numpy": numpy_loop,
    # The engine's own overhead: the bare loop with the engine's median.
    "bare, lossfn median": lambda reps: bare_torch(reps, median=lossfn.location.median),
    "torch all at once": lambda reps: bare_torch(reps, chunk=reps),
}


def _status_kib(field: str) -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise KeyError(field)


def child(variant: str, reps: int) -> None:
    """Peak-RSS growth of one variant over the resident set before it, in MiB, as JSON."""
    VARIANTS[variant](20_000)  # warm-up: lazy initialization is not the study's memory
    try:
        # Reset the kernel's high-water mark (VmHWM) so the imports' peak does not hide ours.
        with open("/proc/self/clear_refs", "w") as clear:
            clear.write("5")
        before = _status_kib("VmRSS")
        VARIANTS[variant](reps)
        after = _status_kib("VmHWM")
    except OSError:  # not Linux: the process-lifetime peak, a coarser measure
        before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        VARIANTS[variant](reps)
        after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(json.dumps({"mib": (after - before) / 1024}))


def peak_mib(variant: str, reps: int, runs: int = 3) -> float:
    """Median over ``runs`` fresh subprocesses (a single reading can be off by megabytes)."""
    return statistics.median(_peak_once(variant, reps) for _ in range(runs))


def _peak_once(variant: str, reps: int) -> float:
    out = subprocess.run([sys.executable, __file__, "--child", variant, "--reps", str(reps),
                          "--threads", str(torch.get_num_threads())],
                         capture_output=True, text=True, check=True,
                         env={**os.environ, "MALLOC_MMAP_THRESHOLD_": str(1 << 20)})
    return json.loads(out.stdout.strip().splitlines()[-1])["mib"]


CLOCKS = {"wall": time.perf_counter, "cpu": time.process_time}


def medians_s(reps: int, repeats: int, clock=time.perf_counter) -> dict:
    times = {name: [] for name in VARIANTS}
    for fn in VARIANTS.values():
        fn(20_000)
    for r in range(repeats):
        names = list(VARIANTS)
        for name in names[r % len(names):] + names[: r % len(names)]:
            start = clock()
            VARIANTS[name](reps)
            times[name].append(clock() - start)
    return {name: statistics.median(t) for name, t in times.items()}


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes: check that it runs")
    parser.add_argument("--repeats", type=int, default=None)
    parser.add_argument("--reps", type=int, default=None)
    parser.add_argument("--threads", type=int, default=None,
                        help="torch.set_num_threads (default: torch's choice)")
    parser.add_argument("--clock", choices=sorted(CLOCKS), default="wall",
                        help="wall time, or the process's CPU time (steadier on a shared "
                             "machine; with --threads 1 it is the time of the work itself)")
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    reps = args.reps or (100_000 if args.quick else 1_000_000)
    if args.child:
        child(args.child, reps)
        return {}
    repeats = args.repeats or (3 if args.quick else 7)

    seconds = medians_s(reps, repeats, CLOCKS[args.clock])
    memory = {name: peak_mib(name, reps) for name in VARIANTS}
    print(f"Monte Carlo study: {reps:,} replicates x m = {M}, mean + median, float32, "
          f"chunk {CHUNK:,}; torch {torch.__version__}, {torch.get_num_threads()} threads; "
          f"{args.clock} clock, median of {repeats}")
    print(f"{'variant':<22}{'time (s)':>10}{'vs bare torch':>15}{'peak RSS growth (MiB)':>24}")
    for name in VARIANTS:
        print(f"{name:<22}{seconds[name]:>10.3f}{seconds[name] / seconds['bare torch']:>15.2f}"
              f"{memory[name]:>24.1f}")
    ratios = {
        "run / bare torch (target <= 1.2)": seconds["montecarlo.run"] / seconds["bare torch"],
        "numpy / run (target >= 2)": seconds["numpy"] / seconds["montecarlo.run"],
        "run / bare with lossfn median (the engine's overhead)":
            seconds["montecarlo.run"] / seconds["bare, lossfn median"],
        "run memory / all at once (target <= 0.2)":
            memory["montecarlo.run"] / max(memory["torch all at once"], 1e-9),
    }
    for label, value in ratios.items():
        print(f"{label}: {value:.2f}")
    return {"seconds": seconds, "memory_mib": memory, "ratios": ratios}


if __name__ == "__main__":
    main()
