"""Cross-rank helpers of the metric bookkeeping, on a real 2-process gloo group."""

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from lightning_modules.metrics.distributed import process_rank, rank_zero_choice, sum_over_ranks


def _check_on_rank(rank: int, init_file: str, results: str) -> None:
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=2)
    try:
        # Rank 1 "sees" a different file than rank 0 (e.g. a node-local cache): both follow rank 0.
        choice = rank_zero_choice(rank == 0)
        total = sum_over_ranks(torch.tensor(3 + rank))
        torch.save({"rank": process_rank(), "choice": choice, "total": total}, f"{results}.{rank}")
    finally:
        dist.destroy_process_group()


def test_every_rank_takes_rank_zeros_choice_and_the_summed_count(tmp_path):
    results = str(tmp_path / "result")
    mp.spawn(_check_on_rank, args=(str(tmp_path / "init"), results), nprocs=2)
    outcome = [torch.load(f"{results}.{rank}") for rank in range(2)]
    assert outcome == [{"rank": 0, "choice": True, "total": 7}, {"rank": 1, "choice": True, "total": 7}]


def test_single_process_needs_no_group():
    assert process_rank() == 0
    assert rank_zero_choice(False) is False
    assert sum_over_ranks(torch.tensor(4.0)) == 4.0
