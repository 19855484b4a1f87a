"""Skip optimizer steps whose gradients are non-finite; stop after too many in a row."""

from typing import Any

import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import Callback
from pytorch_lightning.utilities.rank_zero import rank_zero_warn


class NonFiniteLossError(RuntimeError):
    """Raised when training produced non-finite losses or gradients for too many consecutive steps."""


class NonFiniteLossGuard(Callback):
    """Skips an optimizer step whose loss or gradients are NaN/inf, counts it, and stops after ``max_consecutive``.

    A non-finite loss back-propagates into non-finite gradients, so the check runs on the gradients, right before the
    optimizer step: all parameter gradients are reduced with one fused ``torch._foreach_norm`` and a single
    host synchronisation per step (the price of deciding on the host). On a bad step every ``.grad`` is set to
    ``None``, which makes torch optimizers skip every parameter: weights and Adam moments (and its step count) stay
    untouched. Lightning still counts the step (``global_step`` and a step-interval LR scheduler advance) and EMA
    weight averaging still runs its update on the unchanged weights. Under DDP the gradients are already
    all-reduced, so every rank takes the same decision.

    With ``precision="16-mixed"`` the GradScaler already skips overflowing steps and adapts its scale; those steps
    are left to it and not counted here (use bf16 to get the guard's behaviour).

    Every skip is warned with its step and logged as ``train/skipped_steps`` (total); the total survives resume
    (callback state). After ``max_consecutive`` consecutive skips training stops with :class:`NonFiniteLossError`
    from inside the step, before ``ModelCheckpoint`` could save it, so the last checkpoint on disk stays the last
    good one. Do not combine with ``OnExceptionCheckpoint``, which would save the failing state.

    Requires automatic optimization (the default).

    Args:
        max_consecutive: Number of consecutive non-finite steps that stops training.
    """

    def __init__(self, max_consecutive: int = 5) -> None:
        if max_consecutive < 1:
            raise ValueError(f"max_consecutive must be >= 1, got {max_consecutive}")
        self.max_consecutive = max_consecutive
        self.skipped_steps = 0
        self.consecutive = 0

    def on_before_optimizer_step(
        self, trainer: "pl.Trainer", pl_module: "pl.LightningModule", optimizer: torch.optim.Optimizer
    ) -> None:
        if getattr(trainer.precision_plugin, "scaler", None) is not None:
            return
        grads = [p.grad for group in optimizer.param_groups for p in group["params"] if p.grad is not None]
        if not grads or self._all_finite(grads):
            self.consecutive = 0
        else:
            self._skip(trainer, optimizer)
        pl_module.log("train/skipped_steps", float(self.skipped_steps), on_step=True, on_epoch=False)

    @staticmethod
    def _all_finite(grads: list[torch.Tensor]) -> bool:
        # One norm per device group in a fused kernel; a NaN/inf anywhere makes its norm non-finite.
        norms = torch._foreach_norm(grads)
        device = grads[0].device
        return bool(torch.isfinite(torch.stack([n.to(device, torch.float32) for n in norms])).all())

    def _skip(self, trainer: "pl.Trainer", optimizer: torch.optim.Optimizer) -> None:
        for group in optimizer.param_groups:
            for param in group["params"]:
                param.grad = None
        self.skipped_steps += 1
        self.consecutive += 1
        step = trainer.global_step
        if self.consecutive >= self.max_consecutive:
            last = getattr(trainer.checkpoint_callback, "last_model_path", "") or "none written yet"
            raise NonFiniteLossError(
                f"training stopped at global step {step}: {self.consecutive} consecutive steps had a non-finite "
                f"loss or gradients (NaN/inf); {self.skipped_steps} steps were skipped in total. No checkpoint was "
                f"written for the failing steps; the last good checkpoint is kept ({last}). Lower the learning "
                "rate, check the data or the precision, then resume from it."
            )
        rank_zero_warn(
            f"NonFiniteLossGuard: non-finite loss or gradients at global step {step}; optimizer step skipped "
            f"({self.consecutive} in a row, {self.skipped_steps} in total, stopping at {self.max_consecutive} in a row)"
        )

    def state_dict(self) -> dict[str, Any]:
        return {"skipped_steps": self.skipped_steps, "consecutive": self.consecutive}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.skipped_steps = int(state_dict["skipped_steps"])
        self.consecutive = int(state_dict["consecutive"])
