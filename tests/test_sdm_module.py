"""SDMLitModule and the condition builders: edges, condition dropout, losses, EMA weights in checkpoints, sampling."""

import pytest
import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import EMAWeightAveraging, ModelCheckpoint
from torch.utils.data import DataLoader

from callbacks.ema import DelayedEMA
from lightning_modules.conditioning import drop_conditions, instance_edges, semantic_condition
from lightning_modules.base import SamplerSettings
from lightning_modules.nets.sdm_unet import SDMUNetConfig
from lightning_modules.sdm import ClassifierFreeGuidance, SDMLitModule

TINY_NET = SDMUNetConfig(
    image_size=8, model_channels=8, channel_mult=(1, 2), num_res_blocks=1, attention_resolutions=(),
    num_head_channels=8, spade_hidden_channels=8,
)  # fmt: skip


def tiny_sdm(**overrides) -> SDMLitModule:
    defaults = {"num_classes": 3, "instance_edges": True, "network": TINY_NET, "num_timesteps": 50,
                "sampling": SamplerSettings(steps=5)}
    return SDMLitModule(**{**defaults, **overrides})


def random_batches(count: int, batch_size: int = 4, size: int = 8, seed: int = 0) -> list[dict]:
    generator = torch.Generator().manual_seed(seed)
    return [
        {
            "image": torch.rand(batch_size, 3, size, size, generator=generator) * 2 - 1,
            "label": torch.randint(0, 3, (batch_size, size, size), generator=generator),
            "instance": torch.randint(0, 2, (batch_size, size, size), generator=generator),
        }
        for _ in range(count)
    ]


def test_instance_edges_mark_both_sides_of_every_boundary():
    instance = torch.tensor([[[1, 1, 2, 2], [1, 1, 2, 2], [3, 3, 3, 3]]])
    expected = torch.tensor([[[0, 1, 1, 0], [1, 1, 1, 1], [1, 1, 1, 1]]], dtype=torch.float32)
    assert torch.equal(instance_edges(instance)[:, 0], expected)


def test_semantic_condition_is_one_hot_then_edges():
    label = torch.tensor([[[0, 2], [1, 1]]])
    y = semantic_condition(label, num_classes=3, instance=torch.tensor([[[5, 5], [5, 5]]]))
    assert y.shape == (1, 4, 2, 2)
    assert torch.equal(y[:, :3].argmax(1), label) and torch.equal(y[:, :3].sum(1), torch.ones(1, 2, 2))
    assert y[:, 3].sum() == 0


def test_drop_conditions_zeroes_whole_samples_at_the_given_rate():
    y = torch.ones(20000, 2, 3, 3)
    dropped = drop_conditions(y, 0.2, generator=torch.Generator().manual_seed(0))
    per_sample = dropped.flatten(1)
    assert torch.all((per_sample == 0).all(1) | (per_sample == 1).all(1))
    assert abs((per_sample == 0).all(1).float().mean().item() - 0.2) < 0.015


def quiet_trainer(**kwargs) -> pl.Trainer:
    options = dict(logger=False, enable_progress_bar=False, enable_model_summary=False, accelerator="cpu")
    return pl.Trainer(**{**options, **kwargs})


def test_training_step_logs_the_hybrid_loss_and_feeds_the_timestep_sampler():
    module = tiny_sdm(timestep_sampler="loss-second-moment")
    trainer = quiet_trainer(max_steps=2, enable_checkpointing=False)
    trainer.fit(module, DataLoader(random_batches(2), batch_size=None))
    metrics = trainer.callback_metrics
    for name in ("train/loss", "train/mse", "train/vb", "train/grad_norm"):
        assert torch.isfinite(metrics[name]), name
    assert sum(f"train/loss_q{q}" in metrics for q in range(4)) == 4
    assert module.timestep_sampler.state_dict()["counts"].sum() == 8  # both steps' losses reached the sampler


def test_warmup_scales_the_learning_rate_linearly():
    module = tiny_sdm(lr=1e-3, warmup_steps=4)
    config = module.configure_optimizers()
    optimizer, scheduler = config["optimizer"], config["lr_scheduler"]["scheduler"]
    lrs = []
    for _ in range(5):
        lrs.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    assert lrs == pytest.approx([2.5e-4, 5e-4, 7.5e-4, 1e-3, 1e-3])


def test_guided_generation_is_deterministic_and_in_range():
    module = tiny_sdm().eval()
    batch = random_batches(1)[0]
    samples = [
        module.generate(batch["label"], batch["instance"], guidance=ClassifierFreeGuidance(1.5),
                        generator=torch.Generator().manual_seed(3))
        for _ in range(2)
    ]
    assert samples[0].shape == (4, 3, 8, 8) and samples[0].abs().max() <= 1
    assert torch.equal(samples[0], samples[1])


@pytest.mark.slow
def test_ema_weights_differ_from_raw_ones_and_are_used_for_sampling(tmp_path):
    module = tiny_sdm(lr=1e-2)
    trainer = quiet_trainer(
        max_steps=6, callbacks=[EMAWeightAveraging(decay=0.5), ModelCheckpoint(dirpath=tmp_path, save_last=True)]
    )
    trainer.fit(module, DataLoader(random_batches(6), batch_size=None))
    checkpoint = torch.load(tmp_path / "last.ckpt", weights_only=True)
    ema, raw = checkpoint["state_dict"], checkpoint["current_model_state"]
    assert any(not torch.equal(ema[k], raw[k]) for k in ema if k.startswith("net."))
    # The EMA weights were copied into the module when training ended.
    assert all(torch.equal(v, ema[k]) for k, v in module.state_dict().items())

    loaded = SDMLitModule.load_from_checkpoint(tmp_path / "last.ckpt", weights_only=True).eval()
    batch = random_batches(1, seed=1)[0]

    def sample(model):
        return model.generate(batch["label"], batch["instance"], generator=torch.Generator().manual_seed(0))

    with_ema = sample(loaded)
    loaded.load_state_dict(raw)
    assert torch.equal(with_ema, sample(module.eval()))
    assert not torch.allclose(with_ema, sample(loaded))

    # Fine-tuning initialisation picks the requested weight set and the saved hparams drop the path.
    for which, expected in (("ema", ema), ("raw", raw)):
        initialised = tiny_sdm(init_from=str(tmp_path / "last.ckpt"), init_weights=which)
        assert all(torch.equal(v, expected[k]) for k, v in initialised.state_dict().items())
    saved = {"hyper_parameters": dict(initialised.hparams)}
    initialised.on_save_checkpoint(saved)
    assert saved["hyper_parameters"]["init_from"] is None


class RecordsTrainingStart(pl.Callback):
    """Copies the optimizer state, learning rate and EMA average as training starts (after on_fit_start)."""

    def on_train_start(self, trainer, pl_module) -> None:
        optimizer = trainer.optimizers[0]
        self.moments = [optimizer.state[p]["exp_avg"].clone() for p in optimizer.param_groups[0]["params"]
                        if p in optimizer.state]
        self.lr = optimizer.param_groups[0]["lr"]
        ema = next(c for c in trainer.callbacks if isinstance(c, DelayedEMA))
        self.average = {k: v.clone() for k, v in ema._average_model.module.state_dict().items()}
        self.num_averaged = int(ema._average_model.n_averaged)


@pytest.mark.slow
def test_fine_tuning_can_continue_the_optimizer_and_the_ema_of_the_raw_weights(tmp_path):
    pretrain = quiet_trainer(max_steps=4, callbacks=[DelayedEMA(decay=0.5), ModelCheckpoint(dirpath=tmp_path,
                                                                                           save_last=True)])
    pretrain.fit(tiny_sdm(lr=1e-2), DataLoader(random_batches(4), batch_size=None))
    checkpoint = torch.load(tmp_path / "last.ckpt", weights_only=True)

    def start(**init) -> RecordsTrainingStart:
        record = RecordsTrainingStart()
        trainer = quiet_trainer(max_steps=1, callbacks=[DelayedEMA(decay=0.5), record], enable_checkpointing=False)
        module = tiny_sdm(lr=2e-5, init_from=str(tmp_path / "last.ckpt"), init_weights="raw", **init)
        trainer.fit(module, DataLoader(random_batches(1, seed=3), batch_size=None))
        return record

    # As the official fine-tune from a modelNNNNNN.pt: the moments and the average continue, at the new lr.
    resumed = start(init_training_state=True)
    saved_moments = [state["exp_avg"] for state in checkpoint["optimizer_states"][0]["state"].values()]
    assert all(torch.equal(a, b) for a, b in zip(resumed.moments, saved_moments, strict=True))
    assert resumed.lr == pytest.approx(2e-5) and checkpoint["optimizer_states"][0]["param_groups"][0]["lr"] == 1e-2
    assert all(torch.equal(resumed.average[k], v) for k, v in checkpoint["state_dict"].items())
    assert resumed.num_averaged == int(checkpoint["averaging_state"]["n_averaged"]) == 4
    # Our default: a fresh optimizer and an average that starts from the loaded (raw) weights.
    fresh = start()
    assert fresh.moments == []
    assert all(torch.equal(fresh.average[k], v) for k, v in checkpoint["current_model_state"].items())
    assert fresh.num_averaged == 0
    with pytest.raises(ValueError, match="init_weights: raw"):
        tiny_sdm(init_from=str(tmp_path / "last.ckpt"), init_training_state=True)


def test_timestep_sampler_state_round_trips_through_checkpoints():
    module = tiny_sdm(timestep_sampler="loss-second-moment")
    module.timestep_sampler.update(torch.tensor([1, 2, 2]), torch.tensor([0.5, 1.0, 2.0]))
    checkpoint: dict = {}
    module.on_save_checkpoint(checkpoint)
    restored = tiny_sdm(timestep_sampler="loss-second-moment")
    restored.on_load_checkpoint(checkpoint)
    assert torch.equal(restored.timestep_sampler.state_dict()["history"], checkpoint["timestep_sampler"]["history"])


def test_missing_instance_maps_are_reported():
    module = tiny_sdm()
    batch = random_batches(1)[0]
    del batch["instance"]
    with pytest.raises(ValueError, match="instance"):
        module.training_inputs(batch)
