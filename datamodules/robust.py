"""Reproducible, resumable training loaders and the bad-sample policy shared by the semantic and person DataModules.

Augmentation randomness is a pure function of ``(seed, epoch, sample index)``: the training sampler hands every
dataset fetch a :class:`SampleKey` carrying the sample's own seed, so batches do not depend on the number of
workers, on which worker served a sample, on prefetching, or on whether the run was resumed. The loader is a
``torchdata`` ``StatefulDataLoader`` whose ``state_dict`` (sampler epoch and position) Lightning stores in every
checkpoint, so a run resumed from a mid-epoch checkpoint continues the epoch where it stopped.
"""

import itertools
import math
import os
import warnings
from abc import ABC, abstractmethod
from collections.abc import Iterator
from typing import Any, Literal, NamedTuple

import numpy as np
import pytorch_lightning as pl
import torch
from torch.utils.data import Dataset
from torch.utils.data.distributed import DistributedSampler
from torchdata.stateful_dataloader import StatefulDataLoader

BadSamplePolicy = Literal["stop", "skip"]

#: What reading a broken file raises (the readers name the file); anything else is a bug and always propagates.
BAD_SAMPLE_ERRORS = (OSError, ValueError)


class BadSampleError(ValueError):
    """A sample's files could not be read or are invalid (the message names the file)."""


class BadSampleWarning(UserWarning):
    """A bad sample was skipped and replaced (``on_bad_sample="skip"``)."""


class SampleKey(NamedTuple):
    """What the training sampler yields per sample: the dataset index and the seed of its augmentations."""

    index: int
    seed: int


def sample_seed(seed: int, epoch: int, index: int) -> int:
    """The augmentation seed of sample ``index`` in ``epoch`` (a well-mixed 63-bit integer)."""
    state = np.random.SeedSequence([seed, epoch, index]).generate_state(1, dtype=np.uint64)
    return int(state[0]) & (2**63 - 1)


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
            yield SampleKey(index, sample_seed(self.seed, self.epoch, index))

    def state_dict(self) -> dict[str, int]:
        return {"epoch": self.epoch, "yielded": self.yielded}

    def load_state_dict(self, state_dict: dict[str, int]) -> None:
        epoch, yielded = int(state_dict["epoch"]), int(state_dict["yielded"])
        if yielded >= self.epoch_samples:
            epoch, yielded = epoch + 1, 0
        self.epoch = self._resume_epoch = epoch
        self._resume_at = yielded


def resumable_train_loader(
    dataset: Dataset,
    trainer: "pl.Trainer | None",
    batch_size: int,
    num_workers: int,
    pin_memory: bool,
    persistent_workers: bool,
) -> StatefulDataLoader:
    """A shuffled, last-batch-dropping ``StatefulDataLoader`` over a :class:`ResumableSampler`.

    The sampler is sharded by the trainer's world size and rank (one process without a trainer) and seeded with
    the seed given to ``seed_everything`` (``PL_GLOBAL_SEED``, else 0), like Lightning's own distributed sampler.
    """
    world_size, rank = (trainer.world_size, trainer.global_rank) if trainer is not None else (1, 0)
    limit = trainer.limit_train_batches if trainer is not None else 1.0
    batches = math.ceil(len(dataset) / world_size) // batch_size  # type: ignore[arg-type]
    # Lightning's reading of limit_train_batches: an int caps the batches, a float is a fraction of them.
    batches = min(batches, limit) if isinstance(limit, int) else int(batches * limit)
    sampler = ResumableSampler(
        dataset, world_size, rank, seed=int(os.environ.get("PL_GLOBAL_SEED", 0)), epoch_samples=batches * batch_size
    )
    return StatefulDataLoader(
        dataset,
        batch_size=batch_size,
        sampler=sampler,
        drop_last=True,
        num_workers=num_workers,
        pin_memory=pin_memory,
        persistent_workers=persistent_workers,
    )


class GuardedDataset(Dataset, ABC):
    """Dataset base that applies the bad-sample policy around :meth:`load` and resolves sample keys.

    A key is a :class:`SampleKey` (training: augmentations drawn from its seed) or a plain index (seed ``None``:
    augmentations drawn from torch's global generator, reproducible under ``seed_everything(workers=True)``).
    With ``"stop"`` an unreadable or invalid sample raises :class:`BadSampleError` naming it. With ``"skip"`` it
    is warned about (:class:`BadSampleWarning`, naming the file), counted in ``skipped_samples`` (per process: each
    dataloader worker counts its own) and replaced by the next readable sample in index order, with the same seed,
    so the replacement is deterministic and batches keep their size.

    Args:
        on_bad_sample: ``"stop"`` or ``"skip"``.
    """

    def __init__(self, on_bad_sample: BadSamplePolicy = "stop") -> None:
        if on_bad_sample not in ("stop", "skip"):
            raise ValueError(f"on_bad_sample must be 'stop' or 'skip', got {on_bad_sample!r}")
        self.on_bad_sample = on_bad_sample
        self.skipped_samples = 0

    @abstractmethod
    def __len__(self) -> int: ...

    @abstractmethod
    def load(self, index: int, seed: int | None) -> dict[str, Any]:
        """Read sample ``index``, drawing every random augmentation parameter from ``seed`` (``None``: from torch's
        global generator)."""

    @abstractmethod
    def describe(self, index: int) -> str:
        """The file(s) of sample ``index``, for error messages."""

    def __getitem__(self, key: int | SampleKey) -> dict[str, Any]:
        if isinstance(key, SampleKey):
            index, seed = key
        else:
            index, seed = int(key), None
        for offset in range(len(self)):
            candidate = (index + offset) % len(self)
            try:
                return self.load(candidate, seed)
            except BAD_SAMPLE_ERRORS as error:
                message = f"bad sample {candidate} ({self.describe(candidate)}): {error}"
                if self.on_bad_sample == "stop":
                    raise BadSampleError(f"{message}; set on_bad_sample='skip' to train without it") from error
                self.skipped_samples += 1
                warnings.warn(
                    f"{message}; skipped ({self.skipped_samples} skipped in this process so far)",
                    BadSampleWarning,
                    stacklevel=2,
                )
        raise BadSampleError(f"no readable sample left: all {len(self)} samples failed to load")
