"""Lightning's EMA callback, with an average that follows the raw weights until averaging starts."""

import itertools
from functools import partial
from typing import Any

import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import EMAWeightAveraging
from torch import Tensor


@torch.no_grad()
def ema_update(averaged: Tensor, current: Tensor, num_averaged: Tensor, *, decay: float) -> Tensor:
    """One EMA step, ``decay·averaged + (1 − decay)·current`` (a module-level function, so it pickles)."""
    return decay * averaged + (1 - decay) * current


class DelayedEMA(EMAWeightAveraging):
    """``EMAWeightAveraging`` whose average equals the raw weights before ``update_starting_at_step``.

    Lightning's callback keeps its copy of the initial weights until the first update, so everything that uses the
    average before then (validation grids, the checkpoints' ``state_dict``, test and predict runs of those
    checkpoints, the module after a run that stops early) samples from the random initialisation. Here the average
    is synchronised with the raw weights wherever it is used, as long as no update has been made; from the first
    update on this is Lightning's EMA unchanged. Its averaging function is picklable, so ``ddp_spawn`` works too.

    Args:
        decay: EMA decay per update.
        update_every_n_steps: Update the average every n optimizer steps.
        update_starting_at_step: First optimizer step (0-based) that updates the average; before it, the average
            is the raw weights.
        update_starting_at_epoch: Alternatively, the first epoch whose end updates the average.
        device: Where the average lives (default: the module's device).
        use_buffers: Average the buffers too (otherwise they are copied).
    """

    def __init__(
        self,
        decay: float = 0.999,
        update_every_n_steps: int = 1,
        update_starting_at_step: int | None = None,
        update_starting_at_epoch: int | None = None,
        device: torch.device | str | int | None = None,
        use_buffers: bool = True,
    ) -> None:
        if not 0.0 <= decay <= 1.0:
            raise ValueError(f"decay must lie in [0, 1], got {decay}")
        super().__init__(device=device, use_buffers=use_buffers, decay=decay, update_every_n_steps=update_every_n_steps,
                         update_starting_at_step=update_starting_at_step,
                         update_starting_at_epoch=update_starting_at_epoch)
        self._kwargs["avg_fn"] = partial(ema_update, decay=decay)

    def _follow_raw_weights(self, pl_module: pl.LightningModule) -> None:
        if self._average_model is None or int(self._average_model.n_averaged) > 0:
            return
        average = itertools.chain(self._average_model.module.parameters(), self._average_model.module.buffers())
        current = itertools.chain(pl_module.parameters(), pl_module.buffers())
        for average_tensor, current_tensor in zip(average, current, strict=True):
            average_tensor.detach().copy_(current_tensor.detach())

    def on_validation_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._follow_raw_weights(pl_module)
        super().on_validation_epoch_start(trainer, pl_module)

    def on_save_checkpoint(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, checkpoint: dict[str, Any]
    ) -> None:
        self._follow_raw_weights(pl_module)
        super().on_save_checkpoint(trainer, pl_module, checkpoint)

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._follow_raw_weights(pl_module)
        super().on_train_end(trainer, pl_module)
