"""Scale-out with ``torch.distributed``: who computes which blocks, and gathering them.

Under ``torchrun --nproc_per_node=K script.py`` (``WORLD_SIZE > 1`` in the
environment) the default process group is initialized on first use if the script
has not done so (``gloo`` for CPU tensors, ``nccl`` for CUDA), so an unchanged
script scales out. Rank ``r`` of ``W`` computes the contiguous range of blocks
``[r·G//W, (r+1)·G//W)``; the per-block statistics are all-gathered and every
rank merges all ``G`` of them in the same fixed tree as a single process does, so
every rank returns bitwise the single-process result.
"""

from __future__ import annotations

import atexit
import os
from typing import Tuple

import torch
import torch.distributed as dist

__all__ = ["world", "local_device", "my_blocks", "gather_blocks"]


def _launched_world_size() -> int:
    return int(os.environ.get("WORLD_SIZE", "1"))


def local_device(device: torch.device) -> torch.device:
    """Under a multi-process launch, an unindexed CUDA device means this rank's GPU."""
    if device.type == "cuda" and device.index is None and _launched_world_size() > 1:
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
    return device


def world(device: torch.device) -> Tuple[int, int]:
    """``(rank, world_size)``, initializing the default group under a launcher."""
    if _launched_world_size() > 1 and not (dist.is_available() and dist.is_initialized()):
        if not dist.is_available():
            raise RuntimeError(
                "montecarlo: WORLD_SIZE > 1 but this torch build has no torch.distributed; "
                "run the script with plain python instead."
            )
        if device.type == "cuda":
            torch.cuda.set_device(device)
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
        # We created it, so we tear it down; torch warns about groups left at exit.
        atexit.register(_destroy)
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def _destroy() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


def _bounds(rank: int, size: int, blocks: int) -> Tuple[int, int]:
    return rank * blocks // size, (rank + 1) * blocks // size


def my_blocks(rank: int, size: int, blocks: int) -> range:
    """The blocks rank ``rank`` of ``size`` computes."""
    return range(*_bounds(rank, size, blocks))


def gather_blocks(rows: torch.Tensor, rank: int, size: int, blocks: int) -> torch.Tensor:
    """All ranks' per-block rows ``(local, L)`` → all blocks in block order ``(G, L)``.

    Ranks hold different numbers of blocks; each pads to the largest count so that
    one fixed-size ``all_gather`` suffices, and the padding is dropped afterwards.
    """
    if size == 1:
        return rows
    counts = [_bounds(r, size, blocks)[1] - _bounds(r, size, blocks)[0] for r in range(size)]
    padded = rows.new_zeros((max(counts), rows.shape[-1]))
    padded[: rows.shape[0]] = rows
    parts = [torch.empty_like(padded) for _ in range(size)]
    dist.all_gather(parts, padded)
    return torch.cat([part[:count] for part, count in zip(parts, counts)])
