"""AtomicCheckpointIO: crash-safe saves, weights-only loads, clear errors for damaged files."""

import pickle
from fractions import Fraction

import pytest
import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import ModelCheckpoint
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from experiments.checkpoint_io import AtomicCheckpointIO, CorruptCheckpointError


class TinyRegressor(pl.LightningModule):
    def __init__(self) -> None:
        super().__init__()
        self.layer = nn.Linear(4, 1)

    def training_step(self, batch, batch_idx):
        (x,) = batch
        return self.layer(x).pow(2).mean()

    def configure_optimizers(self):
        return torch.optim.Adam(self.parameters(), lr=0.01)


def _fit(tmp_path, max_steps, ckpt_path=None):
    trainer = pl.Trainer(
        default_root_dir=tmp_path,
        accelerator="cpu",
        max_steps=max_steps,
        plugins=[AtomicCheckpointIO()],
        callbacks=[ModelCheckpoint(dirpath=tmp_path / "checkpoints", save_last=True, every_n_train_steps=2)],
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    model = TinyRegressor()
    trainer.fit(model, DataLoader(TensorDataset(torch.randn(16, 4)), batch_size=4), ckpt_path=ckpt_path)
    return trainer, model


def _checkpoint() -> dict:
    return {"state_dict": {"w": torch.arange(6.0).reshape(2, 3)}, "global_step": 7, "name": "run"}


def test_round_trip_through_trainer_resumes_and_leaves_no_temp_files(tmp_path):
    _, model = _fit(tmp_path, max_steps=4)
    last = tmp_path / "checkpoints" / "last.ckpt"
    loaded = AtomicCheckpointIO().load_checkpoint(last)
    assert loaded["global_step"] == 4
    assert torch.equal(loaded["state_dict"]["layer.weight"], model.layer.weight.detach())
    assert not list((tmp_path / "checkpoints").glob(".*.tmp"))

    trainer, _ = _fit(tmp_path, max_steps=6, ckpt_path=last)
    assert trainer.global_step == 6


def test_round_trip_preserves_values(tmp_path):
    io = AtomicCheckpointIO()
    path = tmp_path / "sub" / "x.ckpt"
    io.save_checkpoint(_checkpoint(), path)
    loaded = io.load_checkpoint(path)
    assert torch.equal(loaded["state_dict"]["w"], _checkpoint()["state_dict"]["w"])
    assert loaded["global_step"] == 7 and loaded["name"] == "run"


def test_crash_mid_save_keeps_previous_checkpoint(tmp_path, monkeypatch):
    io = AtomicCheckpointIO()
    path = tmp_path / "last.ckpt"
    io.save_checkpoint(_checkpoint(), path)
    previous_bytes = path.read_bytes()

    real_save = torch.save

    def save_half_then_die(obj, file, *args, **kwargs):
        real_save(obj, file, *args, **kwargs)
        file.seek(len(previous_bytes) // 2)
        file.truncate()
        raise KeyboardInterrupt("killed mid-save")

    monkeypatch.setattr(torch, "save", save_half_then_die)
    newer = {**_checkpoint(), "global_step": 8}
    with pytest.raises(KeyboardInterrupt):
        io.save_checkpoint(newer, path)
    monkeypatch.undo()

    assert path.read_bytes() == previous_bytes
    assert io.load_checkpoint(path)["global_step"] == 7
    assert [p.name for p in tmp_path.iterdir()] == ["last.ckpt"]


def test_truncated_checkpoint_is_refused_naming_the_file(tmp_path):
    io = AtomicCheckpointIO()
    path = tmp_path / "last.ckpt"
    io.save_checkpoint(_checkpoint(), path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(CorruptCheckpointError, match=rf"checkpoint {path} is corrupt or truncated"):
        io.load_checkpoint(path)


def test_truncated_checkpoint_stops_resume_with_clear_error(tmp_path):
    path = tmp_path / "broken.ckpt"
    path.write_bytes(b"PK\x03\x04 not really a checkpoint")
    with pytest.raises(CorruptCheckpointError, match="broken.ckpt"):
        _fit(tmp_path, max_steps=2, ckpt_path=path)


def test_pickled_objects_need_an_explicit_opt_in(tmp_path):
    path = tmp_path / "pickled.ckpt"
    torch.save({"state_dict": {}, "ratio": Fraction(1, 3)}, path)
    with pytest.raises(pickle.UnpicklingError, match="pickled.ckpt .*allow_pickle=True"):
        AtomicCheckpointIO().load_checkpoint(path)
    with pytest.warns(UserWarning, match="full unpickling"):
        assert AtomicCheckpointIO(allow_pickle=True).load_checkpoint(path)["ratio"] == Fraction(1, 3)


def test_missing_checkpoint_names_the_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.ckpt"):
        AtomicCheckpointIO().load_checkpoint(tmp_path / "nope.ckpt")
