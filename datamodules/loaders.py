"""DataLoader settings shared by the semantic and person DataModules, and the loaders built from them."""

from torch.utils.data import DataLoader, Dataset, Sampler
from torchdata.stateful_dataloader import StatefulDataLoader

from datamodules.robust import resumable_train_loader


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
        """The shuffled, resumable training loader (see :func:`datamodules.robust.resumable_train_loader`)."""
        return resumable_train_loader(
            dataset,
            getattr(self, "trainer", None),
            batch_size=self.batch_size,
            num_workers=self.num_workers,
            pin_memory=self.pin_batches,
            persistent_workers=self.persistent_workers,
        )
