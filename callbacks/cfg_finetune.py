"""Classifier-free-guidance fine-tuning: from a chosen step or epoch on, train with dropped conditions."""

from typing import Any

import pytorch_lightning as pl
from pytorch_lightning.callbacks import Callback
from pytorch_lightning.utilities.rank_zero import rank_zero_info


class CFGFineTune(Callback):
    """Sets the module's ``condition_drop_prob`` (and optionally a new learning rate) once training reaches a point.

    Each training sample's whole condition is then zeroed with probability ``drop_prob`` (official SDM's second
    stage: 0.2 with lr 2e-5). It is stateless: after a resume past the start point it simply applies again.

    Args:
        drop_prob: Probability of training a sample unconditionally.
        start_step: First global step with dropped conditions (0: from the start, e.g. when fine-tuning a
            pre-trained checkpoint loaded with ``init_from``).
        start_epoch: Alternatively (or additionally) the first epoch; both must be reached when both are set.
        lr: New learning rate for every optimizer parameter group (and the base of its LR scheduler), or ``None``
            to keep the current one.
    """

    def __init__(
        self, drop_prob: float = 0.2, start_step: int = 0, start_epoch: int | None = None, lr: float | None = None
    ) -> None:
        if not 0.0 <= drop_prob <= 1.0:
            raise ValueError(f"drop_prob must lie in [0, 1], got {drop_prob}")
        if start_step < 0 or (start_epoch is not None and start_epoch < 0):
            raise ValueError(f"start_step/start_epoch must be >= 0, got {start_step}/{start_epoch}")
        if lr is not None and lr <= 0:
            raise ValueError(f"lr must be positive, got {lr}")
        self.drop_prob = drop_prob
        self.start_step = start_step
        self.start_epoch = start_epoch
        self.lr = lr
        self._active = False

    def _reached(self, trainer: "pl.Trainer") -> bool:
        epoch_ok = self.start_epoch is None or trainer.current_epoch >= self.start_epoch
        return trainer.global_step >= self.start_step and epoch_ok

    def on_train_batch_start(
        self, trainer: "pl.Trainer", pl_module: "pl.LightningModule", batch: Any, batch_idx: int
    ) -> None:
        if self._active or not self._reached(trainer):
            return
        if not hasattr(pl_module, "condition_drop_prob"):
            raise AttributeError(f"{type(pl_module).__name__} has no condition_drop_prob; CFGFineTune cannot drive it")
        pl_module.condition_drop_prob = self.drop_prob
        if self.lr is not None:
            self._set_lr(trainer, self.lr)
        self._active = True
        rank_zero_info(
            f"CFGFineTune: step {trainer.global_step}: condition drop probability {self.drop_prob}"
            + (f", lr {self.lr}" if self.lr is not None else "")
        )

    @staticmethod
    def _set_lr(trainer: "pl.Trainer", lr: float) -> None:
        for optimizer in trainer.optimizers:
            for group in optimizer.param_groups:
                group["lr"] = lr
                group["initial_lr"] = lr
        for config in trainer.lr_scheduler_configs:
            scheduler = config.scheduler
            scheduler.base_lrs = [lr] * len(scheduler.base_lrs)
            # Keep any warm-up factor that is still running.
            if hasattr(scheduler, "lr_lambdas"):
                for group, lr_lambda in zip(scheduler.optimizer.param_groups, scheduler.lr_lambdas):
                    group["lr"] = lr * lr_lambda(scheduler.last_epoch)
