"""NonFiniteLossGuard: non-finite steps leave weights and optimizer state untouched, are counted, and K stop the run."""

import copy
import math
from pathlib import Path

import pytest
import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import Callback, ModelCheckpoint
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from callbacks.nonfinite_guard import NonFiniteLossError, NonFiniteLossGuard


class NaNInjectingModel(pl.LightningModule):
    """A linear regressor whose loss is multiplied by NaN (or inf) at chosen global steps."""

    def __init__(self, bad_steps: set[int], bad_value: float = math.nan) -> None:
        super().__init__()
        self.layer = nn.Linear(4, 2)
        self.bad_steps = bad_steps
        self.bad_value = bad_value

    def training_step(self, batch, batch_idx):
        (x,) = batch
        loss = self.layer(x).pow(2).mean()
        if self.global_step in self.bad_steps:
            loss = loss * self.bad_value
        return loss

    def configure_optimizers(self):
        return torch.optim.AdamW(self.parameters(), lr=0.1)


class StateRecorder(Callback):
    """Records weights and optimizer state before and after every training batch."""

    def __init__(self) -> None:
        self.before: dict[int, tuple] = {}
        self.after: dict[int, tuple] = {}

    @staticmethod
    def _snapshot(trainer, pl_module):
        weights = {k: v.detach().clone() for k, v in pl_module.state_dict().items()}
        return weights, copy.deepcopy(trainer.optimizers[0].state_dict()["state"])

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        self.before[batch_idx] = self._snapshot(trainer, pl_module)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self.after[batch_idx] = self._snapshot(trainer, pl_module)


def _states_equal(a: tuple, b: tuple) -> bool:
    (weights_a, optim_a), (weights_b, optim_b) = a, b
    if any(not torch.equal(weights_a[k], weights_b[k]) for k in weights_a):
        return False
    if optim_a.keys() != optim_b.keys():
        return False
    return all(torch.equal(torch.as_tensor(optim_a[i][k]), torch.as_tensor(optim_b[i][k]))
               for i in optim_a for k in optim_a[i])


def _trainer(tmp_path: Path, callbacks: list, max_steps: int) -> pl.Trainer:
    return pl.Trainer(
        default_root_dir=tmp_path,
        accelerator="cpu",
        devices=1,
        max_steps=max_steps,
        callbacks=callbacks,
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )


def _loader() -> DataLoader:
    return DataLoader(TensorDataset(torch.randn(32, 4)), batch_size=4)


@pytest.mark.parametrize("bad_value", [math.nan, math.inf])
def test_skipped_steps_leave_weights_and_optimizer_state_unchanged(tmp_path, bad_value):
    torch.manual_seed(0)
    bad_steps = {2, 5, 6}
    guard = NonFiniteLossGuard(max_consecutive=3)
    recorder = StateRecorder()
    model = NaNInjectingModel(bad_steps, bad_value)
    with pytest.warns(UserWarning, match="non-finite loss or gradients at global step 5"):
        _trainer(tmp_path, [guard, recorder], max_steps=8).fit(model, _loader())

    for step in range(8):
        unchanged = _states_equal(recorder.before[step], recorder.after[step])
        assert unchanged == (step in bad_steps), f"step {step}"
    assert all(torch.isfinite(p).all() for p in model.parameters())
    assert guard.skipped_steps == 3
    assert guard.consecutive == 0
    assert guard.state_dict() == {"skipped_steps": 3, "consecutive": 0}


def test_skipped_count_is_logged_and_survives_resume(tmp_path):
    guard = NonFiniteLossGuard(max_consecutive=3)
    trainer = _trainer(tmp_path, [guard, ModelCheckpoint(dirpath=tmp_path, save_last=True)], max_steps=4)
    trainer.fit(NaNInjectingModel({1, 3}), _loader())
    assert float(trainer.callback_metrics["train/skipped_steps"]) == 2.0

    resumed_guard = NonFiniteLossGuard(max_consecutive=3)
    resumed = _trainer(tmp_path, [resumed_guard], max_steps=6)
    resumed.fit(NaNInjectingModel({5}), _loader(), ckpt_path=tmp_path / "last.ckpt")
    assert resumed_guard.skipped_steps == 3


def test_consecutive_non_finite_steps_stop_without_checkpointing_the_failure(tmp_path):
    checkpoints = tmp_path / "checkpoints"
    guard = NonFiniteLossGuard(max_consecutive=3)
    model = NaNInjectingModel({4, 5, 6, 7})
    checkpoint = ModelCheckpoint(dirpath=checkpoints, save_last=True, every_n_train_steps=1, save_top_k=-1)
    with pytest.raises(NonFiniteLossError, match=r"global step 6: 3 consecutive steps .*last good checkpoint"):
        _trainer(tmp_path, [guard, checkpoint], max_steps=20).fit(model, _loader())

    last = torch.load(checkpoints / "last.ckpt", weights_only=True)
    # Steps 4 and 5 were skipped (the model did not change); the failing step 6 was never saved.
    assert last["global_step"] == 6
    assert sorted(p.name for p in checkpoints.glob("epoch=*")) == [
        f"epoch=0-step={s}.ckpt" for s in range(1, 7)
    ]
    assert all(torch.isfinite(v).all() for v in last["state_dict"].values())
    assert last["callbacks"]["NonFiniteLossGuard"] == {"skipped_steps": 2, "consecutive": 2}


def test_rejects_non_positive_limit():
    with pytest.raises(ValueError, match="max_consecutive"):
        NonFiniteLossGuard(max_consecutive=0)
