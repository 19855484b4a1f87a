from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from datamodules.celebamask_hq import CelebAMaskHQDataModule
from datamodules.prepare_celebamask_hq import main as prepare_main
from trees import build_celebamask_hq_tree, build_celebamask_raw_tree


def test_label_doubles_as_instance(tmp_path: Path) -> None:
    build_celebamask_hq_tree(tmp_path)
    module = CelebAMaskHQDataModule(str(tmp_path), image_size=16, batch_size=2, num_workers=0, pin_memory=False)
    assert (module.num_classes, module.label_channels, module.class_names[13]) == (19, 20, "hair")
    module.setup("fit")
    batch = next(iter(module.train_dataloader()))
    assert batch["image"].shape == (2, 3, 16, 16)
    assert torch.equal(batch["instance"], batch["label"])
    assert set(batch["label"].unique().tolist()) <= {0, 1, 13, 18}


def test_prepare_merges_parts_and_splits(tmp_path: Path) -> None:
    raw, out = build_celebamask_raw_tree(tmp_path / "raw"), tmp_path / "out"
    prepare_main([str(raw), str(out)])
    assert sorted(p.name for p in (out / "train/images").iterdir()) == ["0.jpg"]
    assert sorted(p.name for p in (out / "test/labels").iterdir()) == ["1.png", "2.png"]
    label = cv2.imread(str(out / "train/labels/0.png"), cv2.IMREAD_UNCHANGED)
    expected = np.ones((16, 16), np.uint8)  # skin everywhere
    expected[:8] = 13  # hair over skin
    expected[:8, :8] = 14  # hat over hair
    np.testing.assert_array_equal(label, expected)
    assert cv2.imread(str(out / "test/images/2.jpg")).shape == (16, 16, 3)  # resized to the mask size
    module = CelebAMaskHQDataModule(str(out), image_size=16, num_workers=0, pin_memory=False)
    module.setup("test")
    assert len(module.datasets["test"]) == 2

    with pytest.raises(FileExistsError, match=r"0\.jpg already exists"):
        prepare_main([str(raw), str(out)])
    prepare_main([str(raw), str(out), "--overwrite"])


def test_prepare_requires_split_files(tmp_path: Path) -> None:
    raw = build_celebamask_raw_tree(tmp_path / "raw")
    (raw / "list_eval_partition.txt").unlink()
    with pytest.raises(FileNotFoundError, match="list_eval_partition.txt"):
        prepare_main([str(raw), str(tmp_path / "out")])
