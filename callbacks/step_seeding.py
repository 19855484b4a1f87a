"""Training randomness as a pure function of (seed, position in training), so a resumed run draws what it would have."""

import os

import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import Callback
from pytorch_lightning.utilities import CombinedLoader
from torch.utils.data import DataLoader, RandomSampler

from datamodules.seeds import derived_seed


class StepSeeding(Callback):
    """Re-seeds torch's global RNG before every training batch and the shuffling of every epoch.

    Lightning checkpoints do not hold RNG states, and restoring saved states is fragile anyway: validation, the
    sanity check and data-loader start-up draw from the same global generator at points that differ between an
    uninterrupted and a resumed run. Here every random draw of a training step (timesteps, noise, condition dropout,
    network dropout) comes from a generator seeded with ``(seed, batch index, global rank)`` and each epoch's
    shuffling order from ``(seed, epoch)``, so a run resumed from a checkpoint repeats the uninterrupted run exactly.
    Ranks draw different noise. Re-seeding costs no device synchronisation.

    Shuffling: a train ``DataLoader`` built with ``shuffle=True`` (a ``RandomSampler``) gets a per-epoch seeded
    generator; under DDP Lightning's ``DistributedSampler`` already shuffles by ``(seed, epoch)``. A run resumed from
    a **mid-epoch** checkpoint restarts that epoch's order from its beginning unless the train loader is resumable
    (``state_dict``/``load_state_dict``, e.g. ``torchdata``'s ``StatefulDataLoader``); Lightning warns in that case.
    Random augmentations are the DataModule's business (seed them per sample).

    Args:
        seed: Base seed; ``None`` takes the one given to ``seed_everything`` (``PL_GLOBAL_SEED``), else 0.
    """

    def __init__(self, seed: int | None = None) -> None:
        self.seed = seed

    @property
    def base_seed(self) -> int:
        """The seed every derived seed starts from."""
        return self.seed if self.seed is not None else int(os.environ.get("PL_GLOBAL_SEED", 0))

    def on_train_start(self, trainer: "pl.Trainer", pl_module: "pl.LightningModule") -> None:
        self._seed_shuffling(trainer)

    def on_train_epoch_start(self, trainer: "pl.Trainer", pl_module: "pl.LightningModule") -> None:
        self._seed_shuffling(trainer)

    def on_train_batch_start(
        self, trainer: "pl.Trainer", pl_module: "pl.LightningModule", batch: object, batch_idx: int
    ) -> None:
        torch.manual_seed(derived_seed(self.base_seed, trainer.fit_loop.total_batch_idx, trainer.global_rank))

    def _seed_shuffling(self, trainer: "pl.Trainer") -> None:
        # RandomSampler reads its generator when an epoch's iteration begins (lazily, at the first batch).
        for loader in CombinedLoader(trainer.train_dataloader).flattened:
            if isinstance(loader, DataLoader) and isinstance(loader.sampler, RandomSampler):
                generator = torch.Generator().manual_seed(derived_seed(self.base_seed, trainer.current_epoch))
                loader.sampler.generator = generator
