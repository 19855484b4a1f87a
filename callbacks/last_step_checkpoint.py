"""``ModelCheckpoint`` whose ``last.ckpt`` always reaches the final training step."""

from typing import Any, Literal

import pytorch_lightning as pl
from pytorch_lightning.callbacks import ModelCheckpoint


class LastStepCheckpoint(ModelCheckpoint):
    """Lightning's ``ModelCheckpoint``, plus ``last.ckpt`` at the end of every training epoch.

    Lightning refreshes ``last.ckpt`` only together with a periodic save (and at the end of ``fit`` only when nothing
    was saved before), so a run whose length is not a multiple of ``every_n_train_steps`` ended with the checkpoint
    of the previous period and lost the steps after it. The end of the training epoch also comes at ``max_steps``
    in mid-epoch, and there the raw and the averaged (EMA) weights are still both in place (the averaging callback
    swaps the average into the module later, in ``on_train_end``).

    Args:
        save_last: Write ``last.ckpt`` (the project's checkpointing: on by default).
        save_top_k: Periodic checkpoints to keep; by default every one (``-1``), so any step can be evaluated later.
        **kwargs: ``ModelCheckpoint``'s other arguments (``every_n_train_steps``, ``dirpath``, ``monitor``, ...).
    """

    def __init__(self, save_last: bool | Literal["link"] | None = True, save_top_k: int = -1, **kwargs: Any) -> None:
        super().__init__(save_last=save_last, save_top_k=save_top_k, **kwargs)

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        super().on_train_epoch_end(trainer, pl_module)
        if self.save_last and not self._should_skip_saving_checkpoint(trainer):
            self._save_last_checkpoint(trainer, self._monitor_candidates(trainer))
