"""experiments.predict writes one PNG per label map and sample; import_official writes checkpoints it accepts."""

import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
import yaml

from datamodules.image_files import read_rgb, write_png
from experiments.errors import CommandError
from experiments.fit import main as fit
from experiments.import_official import lightning_checkpoint
from experiments.import_official import main as import_official
from experiments.predict import main as predict
from lightning_modules.checkpoint_loading import load_diffusion_module, upgrade_hyperparameters
from lightning_modules.nets.sdm_unet import SDMUNet, SDMUNetConfig
from lightning_modules.official.sdm import export_official_sdm
from lightning_modules.pidm import PIDMLitModule
from lightning_modules.sdm import SDMLitModule

REPO = Path(__file__).parents[1]
# SDMLitModule arguments as a checkpoint stores them (plain values).
TINY = {
    "num_classes": 3, "instance_edges": False, "num_timesteps": 50,
    "network": {"image_size": 8, "model_channels": 8, "channel_mult": [1, 2], "num_res_blocks": 1,
                "attention_resolutions": [], "num_head_channels": 8, "spade_hidden_channels": 8},
}  # fmt: skip


def write_maps(folder: Path, maps: dict[str, np.ndarray]) -> Path:
    folder.mkdir(parents=True)
    for stem, values in maps.items():
        cv2.imwrite(str(folder / f"{stem}.png"), values.astype(np.uint8))
    return folder


@pytest.fixture
def checkpoint(tmp_path) -> Path:
    path = tmp_path / "run" / "checkpoints" / "model.ckpt"
    path.parent.mkdir(parents=True)
    torch.save(lightning_checkpoint(SDMLitModule(**TINY), TINY), path)
    return path


def test_predict_writes_every_sample_and_refuses_to_overwrite(tmp_path, checkpoint):
    rng = np.random.default_rng(0)
    labels = write_maps(tmp_path / "labels", {f"map{i}": rng.integers(0, 3, (8, 8)) for i in range(3)})
    args = ["--ckpt_path", str(checkpoint), "--labels", str(labels), "--out", str(tmp_path / "out"),
            "--steps", "3", "--num_samples", "2", "--batch_size", "4", "--guidance.scale", "1.5"]
    predict(args)
    written = sorted(p.name for p in (tmp_path / "out").iterdir())
    assert written == [f"map{i}_s{k}.png" for i in range(3) for k in range(2)]
    assert cv2.imread(str(tmp_path / "out" / "map0_s1.png")).shape == (8, 8, 3)
    with pytest.raises(CommandError, match="--overwrite"):
        predict(args)
    predict([*args, "--overwrite", "true"])


def test_predict_applies_the_run_datasets_label_remap(tmp_path, checkpoint, capsys):
    # Raw shapes/ADE20K file ids 1..3 are classes 0..2 after the dataset's remap (id - 1, 0 -> "other").
    data = {"class_path": "datamodules.shapes.ShapesDataModule", "init_args": {"root": str(tmp_path / "unused")}}
    config = tmp_path / "data.yaml"
    config.write_text(yaml.safe_dump({"data": data}))
    labels = write_maps(tmp_path / "labels", {"raw": np.array([[1, 2], [3, 1]]).repeat(4, 0).repeat(4, 1)})
    args = ["--ckpt_path", str(checkpoint), "--labels", str(labels), "--steps", "2"]
    with pytest.raises(CommandError, match=r"raw.png has class ids \[3\]"):  # no decoding known: ids used as-is
        predict([*args, "--out", str(tmp_path / "plain")])
    assert "PNG values are used as class ids 0..2" in capsys.readouterr().out
    predict([*args, "--out", str(tmp_path / "remapped"), "--data_config", str(config)])
    assert (tmp_path / "remapped" / "raw_s0.png").is_file()


@pytest.fixture(scope="module")
def trained_shapes_checkpoint(tmp_path_factory) -> Path:
    """A one-step SDM trained on a tiny shapes tree by experiments.fit, copied away from its run directory."""
    root = tmp_path_factory.mktemp("trained")
    fit([
        "--config", str(REPO / "configs/sdm/shapes.yaml"), "--config", str(REPO / "configs/debug/tiny_sdm.yaml"),
        f"--data.init_args.root={root / 'shapes'}", "--data.init_args.num_train=4", "--data.init_args.num_val=2",
        "--data.init_args.num_test=2", f"--trainer.logger.init_args.save_dir={root / 'runs'}", "--trainer.max_steps=1",
    ])  # fmt: skip
    copy = root / "elsewhere" / "model.ckpt"  # no config.yaml next to it: the checkpoint must say how to decode
    copy.parent.mkdir()
    shutil.copy(root / "runs/sdm_shapes/version_0/checkpoints/last.ckpt", copy)
    return copy


def test_a_trained_checkpoint_decodes_raw_dataset_ids_on_its_own(tmp_path, trained_shapes_checkpoint):
    stored = torch.load(trained_shapes_checkpoint, weights_only=True)["raw_label_lut"]
    # The ADE rule of the shapes data (7 classes): id - 1, 0 -> 6 ("other"); from 8 on no class.
    assert stored.shape == (2**16,) and stored[:10].tolist() == [6, 0, 1, 2, 3, 4, 5, 6, -1, -1]
    ids = np.array([[1, 2, 3, 0], [4, 5, 6, 8]]).repeat(8, 0).repeat(4, 1)  # a 16x16 map of raw ids
    labels = write_maps(tmp_path / "labels", {"raw": ids})
    instances = write_maps(tmp_path / "instances", {"raw": np.zeros((16, 16))})
    common = ["--ckpt_path", str(trained_shapes_checkpoint), "--instances", str(instances), "--steps", "2"]
    with pytest.raises(CommandError, match=r"raw.png has raw ids that are no class of the training data \[8\]"):
        predict([*common, "--labels", str(labels), "--out", str(tmp_path / "bad")])
    valid = write_maps(tmp_path / "valid", {"raw": np.clip(ids, 0, 6)})
    predict([*common, "--labels", str(valid), "--out", str(tmp_path / "good")])
    assert (tmp_path / "good" / "raw_s0.png").is_file()


def test_sampling_follows_the_checkpoint_unless_the_command_line_says_otherwise(tmp_path, monkeypatch):
    hparams = {**TINY, "sampling": {"sampler": "ddpm", "steps": 3}, "guidance": {"scale": 1.5}}
    path = tmp_path / "run" / "checkpoints" / "model.ckpt"
    path.parent.mkdir(parents=True)
    torch.save(lightning_checkpoint(SDMLitModule(**hparams), hparams), path)
    labels = write_maps(tmp_path / "labels", {"a": np.zeros((8, 8))})
    used = []
    sample = SDMLitModule.sample
    monkeypatch.setattr(SDMLitModule, "sample", lambda self, variants, guidance, shape, *, sampling, **kwargs: (
        used.append((sampling, dict(guidance.weights))) or sample(self, variants, guidance, shape, sampling=sampling,
                                                                  **kwargs)))
    predict(["--ckpt_path", str(path), "--labels", str(labels), "--out", str(tmp_path / "a")])
    predict(["--ckpt_path", str(path), "--labels", str(labels), "--out", str(tmp_path / "b"), "--sampler", "ddim",
             "--steps", "2", "--guidance.scale", "1"])
    (first, first_weights), (second, second_weights) = used
    assert (first.sampler, first.steps, first_weights) == ("ddpm", 3, {"cond": 1.5, "null": -0.5})
    assert (second.sampler, second.steps, second_weights) == ("ddim", 2, {"cond": 1.0})


def test_checkpoints_of_the_flat_argument_layout_still_load(tmp_path):
    """Checkpoints written before the network, sampler and guidance settings became blocks."""
    flat = {**{k: v for k, v in TINY.items() if k != "network"}, **TINY["network"], "sampler": "ddpm",
            "sampling_steps": 3, "guidance_scale": 1.5}
    path = tmp_path / "old.ckpt"
    torch.save(lightning_checkpoint(SDMLitModule(**TINY), flat), path)
    model = load_diffusion_module(path)
    assert model.net.config.model_channels == 8 and model.sampling.steps == 3 and model.guidance.scale == 1.5
    pidm_flat = {"pose_channels": 4, "image_size": 8, "model_channels": 8, "channel_mult": [1, 2],
                 "num_res_blocks": 1, "attention_resolutions": [4], "embed_channels": 16, "guidance": "style_only",
                 "w_pose": 2.0, "w_style": 2.0, "scale": 3.0}  # every weight was stored whatever the form
    upgraded = upgrade_hyperparameters(pidm_flat)
    assert upgraded["guidance"] == {"form": "style_only", "scale": 3.0} and upgraded["network"]["image_size"] == 8
    PIDMLitModule(**upgraded)


def test_options_of_the_other_model_family_are_errors(tmp_path, checkpoint):
    labels = write_maps(tmp_path / "labels", {"a": np.zeros((8, 8))})
    common = ["--ckpt_path", str(checkpoint), "--labels", str(labels), "--out", str(tmp_path / "out")]
    with pytest.raises(CommandError, match=r"--guidance.w_pose is an option of PIDM .* holds a SDMLitModule"):
        predict([*common, "--guidance.w_pose", "2"])
    with pytest.raises(CommandError, match=r"--source is an option of PIDM"):
        predict([*common, "--source", str(labels / "a.png")])
    with pytest.raises(CommandError, match="no instance-edge channel"):
        predict([*common, "--instances", str(labels)])
    assert not (tmp_path / "out").exists()


def test_imported_official_weights_predict(tmp_path):
    flags = {"image_size": 16, "num_channels": 32, "num_res_blocks": 1, "channel_mult": "1,2",
             "attention_resolutions": "8", "num_head_channels": 32, "num_classes": 3, "no_instance": True,
             "learn_sigma": True, "resblock_updown": True, "diffusion_steps": 50}
    net = SDMUNet(3, SDMUNetConfig(model_channels=32, channel_mult=(1, 2), num_res_blocks=1,
                                   attention_resolutions=(8,), image_size=16, num_head_channels=32))
    torch.save(export_official_sdm(net), tmp_path / "official.pt")
    (tmp_path / "flags.yaml").write_text(yaml.safe_dump(flags))
    out = import_official(["--family", "sdm", "--weights", str(tmp_path / "official.pt"), "--official_config",
                           str(tmp_path / "flags.yaml"), "--out", str(tmp_path / "sdm.ckpt")])
    checkpoint = torch.load(out, weights_only=True)
    assert all(torch.equal(checkpoint["state_dict"][f"net.{k}"], v) for k, v in net.state_dict().items())
    # It samples as the official scripts: ancestral DDPM over every step, guidance 1.5, x0 clipped.
    hparams = checkpoint["hyper_parameters"]
    assert (hparams["sampling"], hparams["guidance"], hparams["clip_x0"]) == (
        {"sampler": "ddpm", "steps": 50}, {"scale": 1.5}, True)
    model_section = yaml.safe_load(out.with_suffix(".yaml").read_text())["model"]
    assert model_section["class_path"] == "lightning_modules.sdm.SDMLitModule"
    init_args = model_section["init_args"]
    assert init_args["sampling"]["sampler"] == "ddpm" and init_args["network"]["model_channels"] == 32
    labels = write_maps(tmp_path / "labels", {"a": np.zeros((16, 16))})
    predict(["--ckpt_path", str(out), "--labels", str(labels), "--out", str(tmp_path / "gen"), "--steps", "2"])
    assert (tmp_path / "gen" / "a_s0.png").is_file()


def write_photo(path: Path, size: tuple[int, int], seed: int = 0) -> Path:
    pixels = np.random.default_rng(seed).integers(0, 256, (*size, 3), dtype=np.uint8)
    write_png(path, pixels)
    return path


@pytest.mark.parametrize("region", ["mask", "mask_labels"])
def test_sdm_edit_regenerates_only_the_region_and_keeps_the_photo_elsewhere(tmp_path, checkpoint, region, capsys):
    # An edited label map: class 2 painted into the right half; the photo stays where nothing was painted.
    label = np.zeros((8, 8), dtype=np.uint8)
    label[:, 4:] = 2
    labels = write_maps(tmp_path / "labels", {"edited": label})
    photo = write_photo(tmp_path / "photo.png", (8, 8))
    region_args = ["--mask_labels", "[2]"]
    if region == "mask":
        mask = np.zeros((8, 8), dtype=np.uint8)
        mask[:, 4:] = 255
        write_png(tmp_path / "mask.png", mask)
        region_args = ["--mask", str(tmp_path / "mask.png")]
    written = predict(["--ckpt_path", str(checkpoint), "--labels", str(labels / "edited.png"), "--image", str(photo),
                       *region_args, "--steps", "3", "--out", str(tmp_path / "out")])
    result, original = read_rgb(written[0]), read_rgb(photo)
    assert np.array_equal(result[:, :4], original[:, :4])  # kept exactly outside the region
    assert not np.array_equal(result[:, 4:], original[:, 4:])  # regenerated inside
    assert "wrote 1 file to" in capsys.readouterr().out


def test_sdm_edit_options_must_come_together(tmp_path, checkpoint):
    labels = write_maps(tmp_path / "labels", {"a": np.zeros((8, 8))})
    photo = write_photo(tmp_path / "photo.png", (8, 8))
    common = ["--ckpt_path", str(checkpoint), "--labels", str(labels), "--out", str(tmp_path / "out")]
    with pytest.raises(CommandError, match="--image is missing"):
        predict([*common, "--mask_labels", "[1]"])
    with pytest.raises(CommandError, match="exactly one of --mask"):
        predict([*common, "--image", str(photo)])
    small = write_photo(tmp_path / "small.png", (4, 4))
    with pytest.raises(CommandError, match=r"small.png has size \(4, 4\), but label map .*a.png has \(8, 8\)"):
        predict([*common, "--image", str(small), "--mask_labels", "[0]"])
    with pytest.raises(CommandError, match="--steps must be at least 1"):
        predict([*common, "--steps", "0"])
    assert not (tmp_path / "out").exists()
