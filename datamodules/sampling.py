"""Samplers for evaluation dataloaders."""

import torch.distributed as dist
from pytorch_lightning.overrides.distributed import UnrepeatedDistributedSampler
from torch.utils.data import Dataset, Sampler


def evaluation_sampler(dataset: Dataset) -> Sampler | None:
    """Shards ``dataset`` over the ranks of an initialised process group with every sample seen exactly once.

    Lightning's default ``DistributedSampler`` pads the last round with repeated samples, which would count them
    twice in test metrics (FID, mIoU, ...). Ranks may then run different numbers of batches, so nothing may
    synchronise per step. Returns None (the loader's own order) in a single process.
    """
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return None
    return UnrepeatedDistributedSampler(dataset, shuffle=False)
