r"""The engine: seeded blocks, chunked evaluation, fixed-order reduction; and ``run``.

The replicates ``0 … reps − 1`` are cut into blocks of ``block_size``. Block ``b``
draws its samples from its own generator, seeded with
``fmix32((h(seed) + b) mod 2³²)`` (``h`` from :class:`numpy.random.SeedSequence`,
``fmix32`` MurmurHash3's finalizer, a bijection), so no two blocks of a study share
a stream and a block's numbers depend only on ``(seed, b, block_size)``. A chunk
is a run of whole blocks (``chunk_size`` rounded down to a multiple of
``block_size``, at least one block): its samples are drawn block by block,
concatenated, and every estimator runs on the chunk at once. Per-block statistics
(:mod:`._stats`) are then merged in a fixed tree over all blocks. Memory is thus
bounded by the chunk, and the result is bitwise the same for every ``chunk_size``
and every number of processes, provided each estimator's value for a replicate
does not depend on the other replicates in the batch (true of row-wise
reductions, sorts and every built-in).
"""

from __future__ import annotations

import math
from typing import Callable, Mapping, Optional, Sequence, Union

import numpy as np
import torch

from ..noise import NoiseModel
from . import _distributed
from ._estimators import BUILTINS, batched, resolve
from ._result import Study, rows_from
from ._stats import Moments, block_moments, fold, pack, summarize, unpack

__all__ = ["run", "MAX_BLOCK_SIZE"]

#: Larger blocks would let torch split a single sum across threads, making the bits
#: depend on the thread count; up to this size every in-block reduction is serial.
MAX_BLOCK_SIZE = 16_384
_MASK32 = 0xFFFFFFFF


def _fmix32(h: int) -> int:
    h ^= h >> 16
    h = (h * 0x85EBCA6B) & _MASK32
    h ^= h >> 13
    h = (h * 0xC2B2AE35) & _MASK32
    return h ^ (h >> 16)


def block_seed(seed: int, block: int) -> int:
    """The seed of block ``block``'s generator (distinct for every block of one seed)."""
    base = int(np.random.SeedSequence(seed).generate_state(1, np.uint32)[0])
    return _fmix32((base + block) & _MASK32)


def _positive_int(name: str, value, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ValueError(f"montecarlo: {name} must be an integer >= {minimum}, got {value!r}")
    return int(value)


def check_common(reps, seed, chunk_size, block_size, dtype) -> None:
    """Validate the arguments every study takes."""
    _positive_int("reps", reps, 2)
    _positive_int("seed", seed, 0)
    _positive_int("chunk_size", chunk_size)
    if _positive_int("block_size", block_size) > MAX_BLOCK_SIZE:
        raise ValueError(
            f"montecarlo: block_size must be <= {MAX_BLOCK_SIZE}, got {block_size}; larger "
            "blocks make the bits depend on the thread count. Raise chunk_size instead."
        )
    if not isinstance(dtype, torch.dtype) or not dtype.is_floating_point:
        raise TypeError(f"montecarlo: dtype must be a floating torch.dtype, got {dtype!r}")


def check_noise(fn: str, noise) -> None:
    """A noise model whose parameters are scalars (one noise law for every replicate)."""
    if not isinstance(noise, NoiseModel):
        raise TypeError(f"montecarlo.{fn}: noise must be a lossfn.noise.NoiseModel (e.g. "
                        f"lossfn.Gaussian(1.0)), got {type(noise).__name__}")
    params = vars(noise) if hasattr(noise, "__dict__") else {}
    for name, value in params.items():
        if isinstance(value, torch.Tensor) and value.numel() != 1:
            raise ValueError(
                f"montecarlo.{fn}: {noise!r} has {name} of shape {tuple(value.shape)}; the "
                f"engine needs scalar noise parameters. Run one study per parameter value.")


def resolve_device(noise: NoiseModel, device) -> torch.device:
    """``device``, else that of the noise model's tensor parameters, else the CPU."""
    if device is None:
        params = [v for v in vars(noise).values() if isinstance(v, torch.Tensor)]
        device = params[0].device if params else "cpu"
    return _distributed.local_device(torch.device(device))


def check_names(kind: str, functions: Mapping, reference: Optional[str]) -> tuple:
    """The names in ``functions`` and the reference's index."""
    if not isinstance(functions, Mapping) or not functions:
        raise TypeError(f"montecarlo: {kind} must be a non-empty mapping name -> function, "
                        f"got {functions!r}")
    names = tuple(functions)
    if not all(isinstance(n, str) for n in names):
        raise TypeError(f"montecarlo: the names of {kind} must be strings, got {names}")
    ref = names[0] if reference is None else reference
    if ref not in names:
        raise ValueError(f"montecarlo: reference {ref!r} is not one of the {kind} {names}")
    return names, names.index(ref)


def _draw_chunk(draw: Callable, generator: torch.Generator, seed: int, chunk: range,
                lengths: list) -> torch.Tensor:
    """The samples of a run of blocks, each from its own seeded stream, in one buffer.

    Each block is copied into the chunk's buffer as soon as it is drawn, so at most
    one block besides the buffer is alive (``torch.cat`` would hold two chunks).
    """
    samples, start = None, 0
    for b, n in zip(chunk, lengths):
        block = draw(n, generator.manual_seed(block_seed(seed, b)))
        if len(chunk) == 1:
            return block
        if samples is None:
            samples = block.new_empty((sum(lengths),) + tuple(block.shape[1:]))
        samples[start : start + n] = block
        start += n
    return samples


def simulate(draw: Callable, evaluate: Callable, k: int, *, reps: int, seed: int,
             chunk_size: int, block_size: int, device: torch.device,
             progress: Union[bool, str]) -> Moments:
    """Merged statistics of ``evaluate(draw(n, generator))`` over all blocks.

    ``draw(n, generator)`` returns the samples of ``n`` replicates; ``evaluate``
    maps them to float64 errors of shape ``(k, n)``.
    """
    blocks = math.ceil(reps / block_size)
    rank, size = _distributed.world(device)
    mine = _distributed.my_blocks(rank, size, blocks)
    per_chunk = max(1, chunk_size // block_size)
    chunks = [mine[i : i + per_chunk] for i in range(0, len(mine), per_chunk)]
    if progress and rank == 0:
        from tqdm.auto import tqdm  # optional extra "progress"

        chunks = tqdm(chunks, desc=progress if isinstance(progress, str) else "montecarlo",
                      unit="chunk")
    generator = torch.Generator(device=device)
    rows = []
    for chunk in chunks:
        lengths = [min(block_size, reps - b * block_size) for b in chunk]
        errors = evaluate(_draw_chunk(draw, generator, seed, chunk, lengths))
        # Whole blocks in one call (fewer, larger ops); only the study's last block is short.
        whole = sum(n == block_size for n in lengths)
        parts = [errors[:, : whole * block_size].reshape(k, whole, block_size),
                 errors[:, whole * block_size :].unsqueeze(1)]
        rows.extend(pack(block_moments(p.contiguous())) for p in parts if p.numel())
    width = 1 + k + 9 * k * k
    local = torch.cat(rows) if rows else torch.zeros((0, width), dtype=torch.float64,
                                                     device=device)
    return fold(unpack(_distributed.gather_blocks(local, rank, size, blocks), k))


def make_evaluate(functions: Sequence[Callable], names: Sequence[str], truth: float,
                  call: Callable) -> Callable:
    """``samples → (K, n)`` float64 errors; ``call(fn, samples)`` applies one function."""

    def evaluate(samples: torch.Tensor) -> torch.Tensor:
        n = samples.shape[0]
        # Each estimate is converted straight into its row: no per-estimator float64
        # copies and no stacking (fewer passes, less allocator churn next to the chunk).
        errors = torch.empty((len(functions), n), dtype=torch.float64, device=samples.device)
        for row, fn, name in zip(errors, functions, names):
            out = call(fn, samples)
            if tuple(out.shape) != (n,):
                raise ValueError(f"montecarlo: {name!r} returned shape {tuple(out.shape)} "
                                 f"for {n} replicates; expected ({n},)")
            # Detached: a graph through the study would hold every chunk alive (memory
            # no longer bounded by chunk_size), and the statistics are not differentiated.
            row.copy_(out.detach())
        # x − 0 is x bitwise (−0 and nan included): only a real shift costs a pass.
        return errors.sub_(truth) if truth != 0 else errors

    return evaluate


def run(estimators: Mapping[str, Union[str, Callable]], noise: NoiseModel, *, m: int,
        reps: int, truth: float = 0.0, seed: int = 0, chunk_size: int = 100_000,
        block_size: int = 8192, dtype: torch.dtype = torch.float64, device=None,
        progress: Union[bool, str] = False, reference: Optional[str] = None) -> Study:
    r"""Monte Carlo study of location estimators under a noise model.

    Each replicate is ``x = truth + ε`` with ``m`` independent draws ``ε`` from
    ``noise``; each estimator maps it to an estimate of ``truth``. The study reports
    per estimator the mean, bias, variance and MSE of the estimates, the efficiency
    ``Var(reference)/Var(estimator)``, all with Monte Carlo standard errors, and the
    noise model's Cramér–Rao bound for the location (``σ²/m`` Gaussian, ``b²/m``
    Laplace) where the model provides ``location_variance_bound``.

    Args:
        estimators: name → function of samples ``(..., m)`` returning ``(...)``, or
            of one replicate ``(m,)`` returning ``()`` (vmapped; see
            :mod:`lossfn.montecarlo._estimators` for how that is detected), or the
            name of a built-in: ``"mean"``, ``"median"``, ``"huber"`` (δ = 1.345, MAD scale).
        noise: a :class:`lossfn.noise.NoiseModel` with scalar parameters, e.g.
            :class:`lossfn.Gaussian` or :class:`lossfn.Contaminated`.
        m: points per replicate.
        reps: number of replicates (≥ 2).
        truth: the location added to the noise.
        seed: with ``block_size`` and ``noise``, it fixes every random number.
        chunk_size: replicates held in memory at once (rounded down to whole
            blocks, at least one); it never changes the result.
        block_size: replicates per random-number block (≤ 16 384).
        dtype, device: of the samples (the statistics are float64 on ``device``).
            ``device=None`` follows the noise model's tensor parameters, else the CPU.
        progress: show a tqdm progress bar over chunks (a string sets its label).
        reference: estimator the efficiencies are relative to (default: the first).

    Returns:
        A :class:`Study`; ``study[name]`` is a :class:`Row`, ``print(study)`` a table.

    Under ``torchrun --nproc_per_node=K`` the blocks are split across the ranks and
    every rank returns the same, bitwise single-process, result.

    Example:
        >>> import lossfn
        >>> from lossfn import montecarlo
        >>> study = montecarlo.run({"mean": "mean", "median": "median"},
        ...                        lossfn.Gaussian(1.0), m=11, reps=20_000)
        >>> round(study["median"].efficiency.item(), 2)   # exact value at m = 11: 0.663
        0.67
        >>> study.bound                                    # σ²/m
        0.09090909090909091
    """
    check_common(reps, seed, chunk_size, block_size, dtype)
    m = _positive_int("m", m)
    check_noise("run", noise)
    names, ref = check_names("estimators", estimators, reference)
    device = resolve_device(noise, device)
    probe = torch.linspace(-1.0, 1.0, m, dtype=dtype, device=device)
    probe = torch.stack([probe, probe.flip(0) * 0.5 + 0.25])
    functions = [batched(resolve(estimators[n], n, BUILTINS), n, (probe,), (0,)) for n in names]

    def draw(n: int, generator: torch.Generator) -> torch.Tensor:
        eps = noise.sample((n, m), generator=generator, dtype=dtype, device=device)
        if eps.shape != (n, m):
            raise ValueError(f"montecarlo.run: {noise!r} draws shape {tuple(eps.shape)} for "
                             f"({n}, {m}); the engine needs scalar noise parameters")
        # eps is ours (fresh from the sampler): shift it in place, or not at all.
        return eps.add_(truth) if truth != 0 else eps

    evaluate = make_evaluate(functions, names, float(truth), lambda fn, x: fn(x))
    moments = simulate(draw, evaluate, len(names), reps=reps, seed=seed, chunk_size=chunk_size,
                       block_size=block_size, device=device, progress=progress)
    bound_fn = getattr(noise, "location_variance_bound", None)
    bound = None if bound_fn is None else bound_fn(m)
    if isinstance(bound, torch.Tensor):
        bound = float(bound) if bound.numel() == 1 else None
    return Study(rows_from(summarize(moments, ref), names, float(truth), bound),
                 reference=names[ref], reps=reps, m=m, truth=float(truth), seed=seed,
                 block_size=block_size, noise=noise, bound=bound,
                 bound_label="Cramér–Rao bound of the location", moments=moments)
