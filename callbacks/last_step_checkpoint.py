"""``ModelCheckpoint`` whose ``last.ckpt`` always reaches the final training step."""

import pytorch_lightning as pl
from pytorch_lightning.callbacks import ModelCheckpoint


class LastStepCheckpoint(ModelCheckpoint):
    """Lightning's ``ModelCheckpoint``, plus ``last.ckpt`` at the end of every training epoch.

    Lightning refreshes ``last.ckpt`` only together with a periodic save (and at the end of ``fit`` only when nothing
    was saved before), so a run whose length is not a multiple of ``every_n_train_steps`` ended with the checkpoint
    of the previous period and lost the steps after it. The end of the training epoch also comes at ``max_steps``
    in mid-epoch, and there the raw and the averaged (EMA) weights are still both in place (the averaging callback
    swaps the average into the module later, in ``on_train_end``). All other arguments are ``ModelCheckpoint``'s.
    """

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        super().on_train_epoch_end(trainer, pl_module)
        if self.save_last and not self._should_skip_saving_checkpoint(trainer):
            self._save_last_checkpoint(trainer, self._monitor_candidates(trainer))
