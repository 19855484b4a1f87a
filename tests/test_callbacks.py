"""CFGFineTune drops conditions from its start step at its rate; SampleGridLogger logs the per-example grid."""

import pytest
import pytorch_lightning as pl
import torch
from pytorch_lightning.demos.boring_classes import BoringModel
from pytorch_lightning.loggers import TensorBoardLogger
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from torch.utils.data import DataLoader

from callbacks.cfg_finetune import CFGFineTune
from callbacks.sample_grid import SampleGridLogger
from lightning_modules.nets.sdm_unet import SDMUNetConfig
from lightning_modules.sdm import ClassifierFreeGuidance, SDMLitModule

TINY_NET = {
    "network": SDMUNetConfig(image_size=8, model_channels=8, channel_mult=(1, 2), num_res_blocks=1,
                             attention_resolutions=(), num_head_channels=8, spade_hidden_channels=8),
    "num_timesteps": 50,
}


def batches(count: int, batch_size: int) -> list[dict]:
    generator = torch.Generator().manual_seed(0)
    return [
        {
            "image": torch.rand(batch_size, 3, 8, 8, generator=generator) * 2 - 1,
            "label": torch.randint(0, 3, (batch_size, 8, 8), generator=generator),
        }
        for _ in range(count)
    ]


def trainer(**kwargs) -> pl.Trainer:
    options = dict(logger=False, enable_progress_bar=False, enable_model_summary=False, accelerator="cpu",
                   enable_checkpointing=False)
    return pl.Trainer(**{**options, **kwargs})


def test_cfg_finetune_drops_whole_conditions_at_the_rate_from_its_start_step():
    pl.seed_everything(0)
    module = SDMLitModule(num_classes=3, lr=1e-4, warmup_steps=100, **TINY_NET)
    dropped_per_step: list[torch.Tensor] = []

    def record(net, args):  # forward pre-hook: args = (x, t, y)
        dropped_per_step.append(args[2].flatten(1).eq(0).all(1))

    module.net.register_forward_pre_hook(lambda net, args, kwargs: record(net, (*args, kwargs["y"])), with_kwargs=True)
    fit_trainer = trainer(max_steps=8, callbacks=[CFGFineTune(drop_prob=0.25, start_step=2, lr=3e-4)])
    fit_trainer.fit(module, DataLoader(batches(8, 48), batch_size=None))
    assert not torch.cat(dropped_per_step[:2]).any()
    rate = torch.cat(dropped_per_step[2:]).float().mean().item()  # 288 samples: std ≈ 0.026
    assert abs(rate - 0.25) < 0.08
    # The new lr replaced the base of the running warm-up.
    scheduler = fit_trainer.lr_scheduler_configs[0].scheduler
    assert scheduler.base_lrs == [3e-4]
    assert fit_trainer.optimizers[0].param_groups[0]["lr"] < 3e-4


def test_sample_grid_has_one_row_per_example_and_is_logged_with_a_sampler_tag(tmp_path):
    module = SDMLitModule(num_classes=3, instance_edges=True, guidance=ClassifierFreeGuidance(1.5), **TINY_NET)
    data = batches(2, 4)
    for batch in data:
        batch["instance"] = batch["label"].clone()
    logger_callback = SampleGridLogger(num_examples=3, sampler="ddim", steps=4)
    grid = logger_callback.sample_grid(module.eval(), data[0])
    # 3 rows (examples) x 4 columns (label | edges | generated | real) of 8 px with 2 px padding.
    assert grid.shape == (3, 3 * 10 + 2, 4 * 10 + 2) and 0 <= grid.min() and grid.max() <= 1

    logger = TensorBoardLogger(tmp_path, name="run")
    fit_trainer = trainer(max_steps=2, val_check_interval=2, limit_val_batches=1, num_sanity_val_steps=0,
                          logger=logger, callbacks=[logger_callback])
    fit_trainer.fit(module.train(), DataLoader(data, batch_size=None), DataLoader(data, batch_size=None))
    assert [p.name for p in (tmp_path / "run" / "version_0" / "images" / "val").iterdir()] == [
        "samples_ddim4_gs-000002.png"
    ]
    events = EventAccumulator(str(tmp_path / "run" / "version_0")).Reload()
    assert events.Tags()["images"] == ["val/samples_ddim4"]


def test_grid_label_column_uses_the_datamodules_palette_and_samples_with_the_models_guidance(monkeypatch):
    module = SDMLitModule(num_classes=3, guidance=ClassifierFreeGuidance(1.5), **TINY_NET).eval()
    batch = batches(1, 2)[0]
    used = []
    monkeypatch.setattr(module, "sample", lambda variants, guidance, shape, **kwargs: (
        used.append(dict(guidance.weights)) or torch.zeros(shape)))
    palette = torch.tensor([[255, 0, 0], [0, 255, 0], [0, 0, 255]], dtype=torch.uint8)
    grid = SampleGridLogger(num_examples=2, sampler="ddim", steps=2).sample_grid(module, batch, palette)
    assert used == [{"cond": 1.5, "null": -0.5}]
    # First cell of the first row (2 px padding): the label's colours, from the palette.
    expected = palette[batch["label"][0]].permute(2, 0, 1).float() / 255
    torch.testing.assert_close(grid[:, 2:10, 2:10], expected)


def test_last_checkpoint_holds_the_final_step_between_periodic_saves(tmp_path):
    from pytorch_lightning.callbacks import EMAWeightAveraging

    from callbacks.last_step_checkpoint import LastStepCheckpoint

    checkpoint = LastStepCheckpoint(dirpath=tmp_path, every_n_train_steps=4, save_top_k=-1, save_last=True)
    trainer = pl.Trainer(
        max_steps=6, limit_train_batches=10, limit_val_batches=0, logger=False, enable_progress_bar=False,
        callbacks=[checkpoint, EMAWeightAveraging(decay=0.5)],
    )  # fmt: skip
    trainer.fit(BoringModel())
    last = torch.load(tmp_path / "last.ckpt", weights_only=True)
    assert last["global_step"] == 6  # the periodic save was at step 4
    assert sorted(path.name for path in tmp_path.glob("*.ckpt")) == ["epoch=0-step=4.ckpt", "last.ckpt"]
    # Raw and averaged weights are both saved as they were at step 6.
    raw, average = last["current_model_state"]["layer.weight"], last["state_dict"]["layer.weight"]
    assert not torch.equal(raw, average)


class RecordsValidationWeights(BoringModel):
    """Records the weights that each validation run (with the EMA swapped in) sees."""

    def __init__(self) -> None:
        super().__init__()
        self.validated: list[torch.Tensor] = []
        self.raw_at_step: dict[int, torch.Tensor] = {}

    def on_train_batch_end(self, outputs, batch, batch_idx) -> None:
        self.raw_at_step[self.trainer.global_step] = self.layer.weight.detach().clone()

    def on_validation_epoch_start(self) -> None:
        self.validated.append(self.layer.weight.detach().clone())


def test_delayed_ema_follows_the_raw_weights_until_it_starts(tmp_path):
    from pytorch_lightning.callbacks import ModelCheckpoint

    from callbacks.ema import DelayedEMA

    model = RecordsValidationWeights()
    initial = model.layer.weight.detach().clone()
    ema = DelayedEMA(decay=0.5, update_starting_at_step=4)
    trainer = pl.Trainer(
        max_steps=6, limit_train_batches=10, val_check_interval=2, limit_val_batches=1, num_sanity_val_steps=0,
        logger=False,
        enable_progress_bar=False, callbacks=[ModelCheckpoint(dirpath=tmp_path, every_n_train_steps=2, save_top_k=-1),
                                              ema],
    )  # fmt: skip
    trainer.fit(model)
    # Before the start (the first update, at step index 4, follows the 5th optimizer step) validation and
    # checkpoints see the raw weights, not the initialisation.
    assert torch.equal(model.validated[0], model.raw_at_step[2]) and not torch.equal(model.validated[0], initial)
    assert torch.equal(model.validated[1], model.raw_at_step[4])
    early = torch.load(tmp_path / "epoch=0-step=2.ckpt", weights_only=True)
    assert torch.equal(early["state_dict"]["layer.weight"], early["current_model_state"]["layer.weight"])
    # From the first update on it is an average: after step 6 it differs from the raw weights.
    assert not torch.equal(model.validated[2], model.raw_at_step[6])
    late = torch.load(tmp_path / "epoch=0-step=6.ckpt", weights_only=True)
    assert not torch.equal(late["state_dict"]["layer.weight"], late["current_model_state"]["layer.weight"])
    assert int(late["averaging_state"]["n_averaged"]) == 2  # steps 5 and 6


def test_delayed_ema_copies_the_raw_weights_into_a_run_that_ends_before_it_starts():
    import pickle

    from callbacks.ema import DelayedEMA

    model = BoringModel()
    ema = DelayedEMA(update_starting_at_step=100)
    trainer = pl.Trainer(max_steps=3, limit_val_batches=0, logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, callbacks=[ema])
    trainer.fit(model)
    trained = model.layer.weight.detach().clone()
    assert torch.equal(ema._average_model.module.layer.weight, trained)  # not the initialisation copied back
    pickle.loads(pickle.dumps(ema))  # ddp_spawn pickles the callbacks


def test_an_animation_grid_of_a_model_without_poses_is_refused_before_training():
    with pytest.raises(ValueError, match="sample_grid.animation animates pose-guided video frames"):
        SampleGridLogger(animation=True).setup(None, pl.LightningModule(), "fit")
