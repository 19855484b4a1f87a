import contextlib
import io
from pathlib import Path

import huggingface_hub.constants
import pytest
import pytorch_lightning as pl
import segmentation_models_pytorch as smp
import torch
from safetensors.torch import save_file
from torch.utils.data import DataLoader, Dataset

from experiments.cli import run_cli
from lightning_modules.metrics import MissingWeightsError
from lightning_modules.segmenter import SegmenterLitModule, encoder_weights_file, load_segmenter

CONFIGS = Path(__file__).resolve().parents[2] / "configs" / "segmenter"
TINY = {"arch": "Unet", "encoder_name": "resnet18",
        "model_kwargs": {"encoder_depth": 3, "decoder_channels": [16, 8, 4]}}


class Squares(Dataset):
    """Bright squares (class 1) on a dark background (class 0), with an ignored border (255)."""

    def __len__(self) -> int:
        return 8

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        label = torch.zeros(32, 32, dtype=torch.int64)
        start = 4 + index
        label[start:start + 12, start:start + 12] = 1
        image = (label.float() * 1.6 - 0.8).expand(3, -1, -1).clone()
        label[0] = 255
        return {"image": image, "label": label, "path": f"{index}.png"}


@pytest.mark.slow
def test_trains_logs_and_round_trips_through_a_checkpoint(tmp_path):
    torch.manual_seed(0)
    model = SegmenterLitModule(num_classes=2, ignore_index=255, lr=1e-2, **TINY)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    trainer = pl.Trainer(max_steps=4, accelerator="cpu", default_root_dir=tmp_path, logger=False,
                         enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                         limit_val_batches=1)
    loader = DataLoader(Squares(), batch_size=4)
    trainer.fit(model, train_dataloaders=loader, val_dataloaders=loader)
    assert any(not torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert {"train/loss", "val/miou", "val/loss"} <= set(trainer.callback_metrics)
    assert 0.0 <= trainer.callback_metrics["val/miou"].item() <= 1.0

    path = tmp_path / "segmenter.ckpt"
    trainer.save_checkpoint(path)
    loaded = load_segmenter(path)
    assert not loaded.training and not any(p.requires_grad for p in loaded.parameters())
    images = Squares()[0]["image"][None]
    model.eval()
    with torch.no_grad():
        torch.testing.assert_close(loaded(images), model(images))
    assert trainer.test(loaded, dataloaders=loader, verbose=False)[0]["test/miou"] >= 0.0


@pytest.mark.slow
def test_shapes_segmenter_fits_and_tests_from_its_checkpoint_with_the_cli(tmp_path):
    data = ["--data.init_args.root", str(tmp_path / "data"), "--data.init_args.num_train=4",
            "--data.init_args.num_val=2", "--data.init_args.num_test=2", "--data.init_args.batch_size=2",
            "--data.init_args.num_workers=0", "--trainer.logger.init_args.save_dir", str(tmp_path / "runs")]
    config = ["--config", str(CONFIGS / "shapes.yaml"), "--model.init_args.encoder_name=resnet18",
              "--model.init_args.model_kwargs={encoder_depth: 3, decoder_channels: [16, 8, 4]}"]
    run_cli("fit", [*config, *data, "--trainer.max_epochs=1"])
    checkpoint = next((tmp_path / "runs").glob("segmenter_shapes/version_0/checkpoints/best.ckpt"))
    assert "instance_edges" not in torch.load(checkpoint, weights_only=True)["hyper_parameters"]
    assert SegmenterLitModule.load_from_checkpoint(checkpoint).hparams.num_classes == 7
    cli = run_cli("test", [*config, *data, "--ckpt_path", str(checkpoint)])
    assert 0.0 <= cli.trainer.callback_metrics["test/miou"].item() <= 1.0


def test_load_segmenter_ignores_cli_extras_in_hyperparameters(tmp_path):
    model = SegmenterLitModule(num_classes=3, **TINY)
    hparams = {**model.hparams, "_class_path": "lightning_modules.segmenter.SegmenterLitModule",
               "_instantiator": "pytorch_lightning.cli.instantiate_module", "instance_edges": True}
    torch.save({"state_dict": model.state_dict(), "hyper_parameters": hparams}, tmp_path / "cli.ckpt")
    loaded = load_segmenter(tmp_path / "cli.ckpt")
    assert loaded.hparams.num_classes == 3
    torch.testing.assert_close(loaded.model.encoder.conv1.weight, model.model.encoder.conv1.weight)


def test_load_segmenter_rejects_other_checkpoints(tmp_path):
    path = tmp_path / "other.ckpt"
    torch.save({"weights": torch.zeros(1)}, path)
    with pytest.raises(ValueError, match="not a SegmenterLitModule checkpoint"):
        load_segmenter(path)


def test_imagenet_encoder_from_weights_dir(tmp_path):
    encoder = smp.encoders.get_encoder("resnet18", weights=None, depth=3)
    torch.nn.init.constant_(encoder.conv1.weight, 0.5)
    save_file(encoder.state_dict(), str(tmp_path / encoder_weights_file("resnet18", "imagenet")))
    model = SegmenterLitModule(num_classes=2, encoder_weights="imagenet", weights_dir=str(tmp_path), offline=True,
                               **TINY)
    assert torch.all(model.model.encoder.conv1.weight == 0.5)


def test_missing_imagenet_encoder_offline_names_repo_and_file(tmp_path):
    with pytest.raises(MissingWeightsError) as info:
        SegmenterLitModule(num_classes=2, encoder_weights="imagenet", weights_dir=str(tmp_path), offline=True, **TINY)
    message = str(info.value)
    assert "smp-hub/resnet18.imagenet" in message
    assert str(tmp_path / encoder_weights_file("resnet18", "imagenet")) in message


def test_unknown_encoder_weights():
    with pytest.raises(ValueError, match="no pretrained weights 'instagram'"):
        SegmenterLitModule(num_classes=2, encoder_weights="instagram", **TINY)


def test_imagenet_encoder_from_hugging_face_cache():
    settings = smp.encoders.encoders["resnet18"]["pretrained_settings"]["imagenet"]
    snapshot = (Path(huggingface_hub.constants.HF_HUB_CACHE) / "models--smp-hub--resnet18.imagenet" / "snapshots"
                / settings["revision"])
    snapshot.mkdir(parents=True)
    encoder = smp.encoders.get_encoder("resnet18", weights=None, depth=3)
    torch.nn.init.constant_(encoder.conv1.weight, -0.25)
    save_file(encoder.state_dict(), str(snapshot / "model.safetensors"))
    model = SegmenterLitModule(num_classes=2, encoder_weights="imagenet", offline=True, **TINY)
    assert torch.all(model.model.encoder.conv1.weight == -0.25)


@pytest.mark.parametrize("name", ["shapes", "ade20k", "cityscapes", "celebamask_hq", "coco_stuff"])
def test_configs_parse_with_the_fit_command(name):
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed), pytest.raises(SystemExit) as exit_info:
        run_cli("fit", ["--config", str(CONFIGS / f"{name}.yaml"), "--print_config"])
    assert exit_info.value.code == 0
    assert "lightning_modules.segmenter.SegmenterLitModule" in printed.getvalue()
