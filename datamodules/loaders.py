"""DataLoader settings shared by the semantic and person DataModules, and the loaders built from them.

The training loader is a ``torchdata`` ``StatefulDataLoader`` whose ``state_dict`` (sampler epoch and position)
Lightning stores in every checkpoint, so a run resumed from a mid-epoch checkpoint continues the epoch where it
stopped.
"""

import math
import os

import pytorch_lightning as pl
from torch.utils.data import DataLoader, Dataset, Sampler
from torchdata.stateful_dataloader import StatefulDataLoader

from datamodules.samplers import ResumableSampler


class DataLoaderSettings:
    """Mixin for a ``LightningDataModule``: batch size, workers and pinning, one place for all its loaders."""

    def init_loader_settings(
        self, batch_size: int, num_workers: int, pin_memory: bool, persistent_workers: bool
    ) -> None:
        """Check and store the settings (``persistent_workers`` only takes effect with ``num_workers > 0``)."""
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {batch_size}")
        if num_workers < 0:
            raise ValueError(f"num_workers must be non-negative, got {num_workers}")
        self.batch_size = batch_size
        self.num_workers = num_workers
        self.pin_memory = pin_memory
        self.persistent_workers = persistent_workers and num_workers > 0

    @property
    def pin_batches(self) -> bool:
        """``pin_memory`` where it helps: when the trainer runs on a GPU (pinning for a CPU run only warns)."""
        trainer = getattr(self, "trainer", None)
        return self.pin_memory and trainer is not None and trainer.strategy.root_device.type == "cuda"

    def evaluation_loader(self, dataset: Dataset, sampler: Sampler | None = None) -> DataLoader:
        """An in-order loader (validation, test, predict), optionally over an explicit sampler."""
        return DataLoader(
            dataset,
            batch_size=self.batch_size,
            sampler=sampler,
            num_workers=self.num_workers,
            pin_memory=self.pin_batches,
            persistent_workers=self.persistent_workers,
        )

    def training_loader(self, dataset: Dataset) -> StatefulDataLoader:
        """The shuffled, resumable training loader (see :func:`resumable_train_loader`)."""
        return resumable_train_loader(
            dataset,
            getattr(self, "trainer", None),
            batch_size=self.batch_size,
            num_workers=self.num_workers,
            pin_memory=self.pin_batches,
            persistent_workers=self.persistent_workers,
        )


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
