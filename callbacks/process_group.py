"""Leave the distributed process group when the process exits, whatever its backend."""

import atexit

import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import Callback


def destroy_process_group_if_initialized() -> None:
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()


class LeaveProcessGroupAtExit(Callback):
    """Destroys the default process group at interpreter exit, on every rank.

    Lightning registers that only for NCCL groups. A rank that exits with a live gloo group (DDP on CPU) can abort
    in gloo's destructor ("terminate called without an active exception") after a finished run, so the launch
    fails although everything was written. The CLI adds this callback to every run.
    """

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            atexit.unregister(destroy_process_group_if_initialized)  # once per process, however many runs
            atexit.register(destroy_process_group_if_initialized)
