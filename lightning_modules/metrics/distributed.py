"""The process rank and cross-rank sums the metric bookkeeping needs, in one process or under DDP."""

from __future__ import annotations

import torch.distributed as dist
from torch import Tensor


def process_rank() -> int:
    """This process's global rank (0 without an initialised process group)."""
    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


def rank_zero_choice(flag: bool) -> bool:
    """Rank zero's ``flag`` on every rank (a collective under DDP), so that ranks which would see different files
    (e.g. a cache on node-local disks) still take the same branch, and so reach the same collectives."""
    if not (dist.is_available() and dist.is_initialized()):
        return flag
    choice = [flag]
    dist.broadcast_object_list(choice, src=0)
    return bool(choice[0])


def sum_over_ranks(value: Tensor) -> float:
    """A scalar state summed over all ranks (a collective under DDP: every rank must call it)."""
    total = value.detach().clone()
    if dist.is_available() and dist.is_initialized():
        dist.all_reduce(total)
    return total.item()
