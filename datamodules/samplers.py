"""Index samplers of the DataModules' loaders: the resumable, per-sample-seeded training order and the evaluation
sharding that sees every sample once.

Augmentation randomness is a pure function of ``(seed, epoch, sample index)``: the training sampler hands every
dataset fetch a :class:`SampleKey` carrying the sample's own seed, so batches do not depend on the number of
workers, on which worker served a sample, on prefetching, or on whether the run was resumed.
"""

import itertools
from collections.abc import Iterator
from typing import NamedTuple

import torch.distributed as dist
from pytorch_lightning.overrides.distributed import UnrepeatedDistributedSampler
from torch.utils.data import Dataset, Sampler
from torch.utils.data.distributed import DistributedSampler

from datamodules.seeds import derived_seed


class SampleKey(NamedTuple):
    """What the training sampler yields per sample: the dataset index and the seed of its augmentations."""

    index: int
    seed: int


class ResumableSampler(DistributedSampler):
    """Shuffles by ``(seed, epoch)``, shards over ranks, yields :class:`SampleKey` and resumes mid-epoch.

    A ``DistributedSampler`` (so Lightning keeps it under DDP instead of injecting its own) that is also stateful:
    its ``state_dict`` holds the epoch and how many samples it has handed out, and ``StatefulDataLoader`` saves it
    with the loader state. A resumed run starts iterating (workers prefetch at once) before Lightning's
    ``set_epoch`` call and without a fresh iterator, so the restored state must already say which epoch comes
    next: a position at or past ``epoch_samples`` (a checkpoint taken at an epoch's last batch) restores as the
    start of the next epoch; a position inside an epoch continues that epoch, and only while Lightning keeps it.

    Args:
        dataset: the training dataset.
        num_replicas: number of ranks sharing the data.
        rank: this process's rank.
        shuffle: shuffle every epoch (otherwise index order).
        seed: base seed of the order and of every sample's augmentations.
        epoch_samples: samples this rank consumes per epoch (fewer than it holds when the last incomplete batch
            is dropped or the trainer limits the batches); ``None``: all of them.
    """

    def __init__(
        self,
        dataset: Dataset,
        num_replicas: int = 1,
        rank: int = 0,
        shuffle: bool = True,
        seed: int = 0,
        epoch_samples: int | None = None,
    ) -> None:
        super().__init__(dataset, num_replicas=num_replicas, rank=rank, shuffle=shuffle, seed=seed)
        self.epoch_samples = self.num_samples if epoch_samples is None else min(epoch_samples, self.num_samples)
        self.yielded = 0
        self._resume_epoch: int | None = None
        self._resume_at = 0

    def __iter__(self) -> Iterator[SampleKey]:  # type: ignore[override]
        self.yielded = self._resume_at if self.epoch == self._resume_epoch else 0
        self._resume_epoch, self._resume_at = None, 0
        for index in itertools.islice(super().__iter__(), self.yielded, None):
            self.yielded += 1
            yield SampleKey(index, derived_seed(self.seed, self.epoch, index))

    def state_dict(self) -> dict[str, int]:
        return {"epoch": self.epoch, "yielded": self.yielded}

    def load_state_dict(self, state_dict: dict[str, int]) -> None:
        epoch, yielded = int(state_dict["epoch"]), int(state_dict["yielded"])
        if yielded >= self.epoch_samples:
            epoch, yielded = epoch + 1, 0
        self.epoch = self._resume_epoch = epoch
        self._resume_at = yielded


def evaluation_sampler(dataset: Dataset) -> Sampler | None:
    """Shards ``dataset`` over the ranks of an initialised process group with every sample seen exactly once.

    Lightning's default ``DistributedSampler`` pads the last round with repeated samples, which would count them
    twice in test metrics (FID, mIoU, ...). Ranks may then run different numbers of batches, so nothing may
    synchronise per step. Returns None (the loader's own order) in a single process.
    """
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return None
    return UnrepeatedDistributedSampler(dataset, shuffle=False)
