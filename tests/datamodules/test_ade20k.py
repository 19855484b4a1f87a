from pathlib import Path

import numpy as np
import torch

from datamodules.ade20k import ADE20KDataModule
from trees import build_ade20k_tree, write_map


def test_batches_and_other_remap(tmp_path: Path) -> None:
    build_ade20k_tree(tmp_path)
    label = np.zeros((24, 32), np.uint8)
    label[:, 16:] = 1
    label[0, 0] = 150
    write_map(tmp_path / "ADEChallengeData2016/annotations/validation/ADE_validation_00000000.png", label)
    module = ADE20KDataModule(str(tmp_path), image_size=16, batch_size=2, num_workers=0, pin_memory=False)
    assert (module.num_classes, module.label_channels, module.has_instances) == (151, 151, False)
    assert module.class_names[150] == "other" and module.palette.shape == (151, 3)
    module.setup("test")
    batch = next(iter(module.test_dataloader()))
    assert set(batch) == {"image", "label", "path"}
    assert batch["image"].shape == (2, 3, 16, 16) and batch["image"].dtype == torch.float32
    assert -1.0 <= batch["image"].min() and batch["image"].max() <= 1.0
    assert batch["label"].shape == (2, 16, 16) and batch["label"].dtype == torch.int64
    first = batch["label"][0]
    assert set(first.unique().tolist()) <= {150, 0, 149}
    assert (first[:, :8] == 150).float().mean() > 0.9  # file id 0 ("other") -> 150
    assert (first[:, 8:] == 0).all()  # file id 1 -> 0
    assert batch["path"][0].endswith("ADE_validation_00000000.jpg")


def test_optional_instances(tmp_path: Path) -> None:
    build_ade20k_tree(tmp_path, instances=True)
    module = ADE20KDataModule(str(tmp_path), image_size=16, use_instances=True, num_workers=0, pin_memory=False)
    assert (module.has_instances, module.label_channels) == (True, 152)
    module.setup("test")
    item = module.datasets["test"][0]
    assert item["instance"].dtype == torch.int64 and set(item["instance"].unique().tolist()) <= {1000, 1001, 1002}
