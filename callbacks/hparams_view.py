"""Training runs in TensorBoard's HParams view: the model's hyperparameters next to the run's scalars."""

import pytorch_lightning as pl
from pytorch_lightning.callbacks import Callback

from lightning_modules.hparams_logging import log_to_hparams_view


class HParamsView(Callback):
    """Writes the model's hyperparameters to each logger's HParams view when training starts.

    TensorBoard shows them as the run's columns, with the scalars the run logs (``val/loss`` among them, at their
    latest value) as its metrics, next to the test command's runs (settings and ``hp/<metric>`` scores); see
    :mod:`lightning_modules.hparams_logging`.
    """

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        params = {"model": type(pl_module).__name__, **pl_module.hparams}
        for logger in trainer.loggers:
            log_to_hparams_view(logger, params, {}, trainer.global_step)
