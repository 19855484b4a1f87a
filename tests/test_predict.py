"""experiments.predict writes one PNG per label map and sample; import_official writes checkpoints it accepts."""

from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
import yaml

from experiments.import_official import lightning_checkpoint
from experiments.import_official import main as import_official
from experiments.predict import main as predict
from lightning_modules.nets.sdm_unet import SDMUNet
from lightning_modules.official.sdm import export_official_sdm
from lightning_modules.sdm import SDMLitModule

TINY = dict(
    num_classes=3, instance_edges=False, image_size=8, model_channels=8, channel_mult=[1, 2], num_res_blocks=1,
    attention_resolutions=[], num_head_channels=8, spade_hidden_channels=8, num_timesteps=50,
)  # fmt: skip


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
            "--steps", "3", "--num_samples", "2", "--batch_size", "4", "--guidance_scale", "1.5"]
    predict(args)
    written = sorted(p.name for p in (tmp_path / "out").iterdir())
    assert written == [f"map{i}_s{k}.png" for i in range(3) for k in range(2)]
    assert cv2.imread(str(tmp_path / "out" / "map0_s1.png")).shape == (8, 8, 3)
    with pytest.raises(SystemExit, match="--overwrite"):
        predict(args)
    predict([*args, "--overwrite"])


def test_predict_applies_the_run_datasets_label_remap(tmp_path, checkpoint):
    # Raw shapes/ADE20K file ids 1..3 are classes 0..2 after the dataset's remap (id - 1, 0 -> "other").
    data = {"class_path": "datamodules.shapes.ShapesDataModule", "init_args": {"root": str(tmp_path / "unused")}}
    config = tmp_path / "data.yaml"
    config.write_text(yaml.safe_dump({"data": data}))
    labels = write_maps(tmp_path / "labels", {"raw": np.array([[1, 2], [3, 1]]).repeat(4, 0).repeat(4, 1)})
    args = ["--ckpt_path", str(checkpoint), "--labels", str(labels), "--steps", "2"]
    with pytest.raises(ValueError, match="raw.png has class ids outside 0..2"):  # no run config: ids used as-is
        predict([*args, "--out", str(tmp_path / "plain")])
    predict([*args, "--out", str(tmp_path / "remapped"), "--data_config", str(config)])
    assert (tmp_path / "remapped" / "raw_s0.png").is_file()


def test_imported_official_weights_predict(tmp_path):
    flags = {"image_size": 16, "num_channels": 32, "num_res_blocks": 1, "channel_mult": "1,2",
             "attention_resolutions": "8", "num_head_channels": 32, "num_classes": 3, "no_instance": True,
             "learn_sigma": True, "resblock_updown": True, "diffusion_steps": 50}
    net = SDMUNet(label_channels=3, model_channels=32, channel_mult=(1, 2), num_res_blocks=1,
                  attention_resolutions=(8,), image_size=16, num_head_channels=32)
    torch.save(export_official_sdm(net), tmp_path / "official.pt")
    (tmp_path / "flags.yaml").write_text(yaml.safe_dump(flags))
    out = import_official(["sdm", "--weights", str(tmp_path / "official.pt"), "--flags",
                           str(tmp_path / "flags.yaml"), "--out", str(tmp_path / "sdm.ckpt")])
    state = torch.load(out, weights_only=True)["state_dict"]
    assert all(torch.equal(state[f"net.{k}"], v) for k, v in net.state_dict().items())
    labels = write_maps(tmp_path / "labels", {"a": np.zeros((16, 16))})
    predict(["--ckpt_path", str(out), "--labels", str(labels), "--out", str(tmp_path / "gen"), "--steps", "2"])
    assert (tmp_path / "gen" / "a_s0.png").is_file()
