from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from PIL import Image

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


@pytest.mark.parametrize("image_size", [32, 8, 12])
def test_release_sized_labels_follow_the_photo(tmp_path: Path, image_size: int) -> None:
    build_celebamask_hq_tree(tmp_path, size=(32, 32), label_size=(16, 16))  # the release's 1024² / 512², scaled
    module = CelebAMaskHQDataModule(str(tmp_path), image_size=image_size, num_workers=0, pin_memory=False)
    module.setup("test")
    item = module.datasets["test"][0]
    stored = Image.open(tmp_path / "test/labels/2.png")
    # Upsampled to the photo, then resized with it: the same pixels as one PIL nearest resize of the stored mask.
    expected = np.array(stored.resize((image_size, image_size), Image.NEAREST))
    assert item["image"].shape == (3, image_size, image_size)
    np.testing.assert_array_equal(item["label"].numpy(), expected)
    assert torch.equal(item["instance"], item["label"])


def test_label_of_another_scale_names_both_files_and_sizes(tmp_path: Path) -> None:
    build_celebamask_hq_tree(tmp_path, size=(32, 32), label_size=(24, 24))  # factor 4/3: not an integer
    module = CelebAMaskHQDataModule(str(tmp_path), image_size=32, num_workers=0, pin_memory=False)
    module.setup("test")
    with pytest.raises(ValueError, match=r"label map \S*test/labels/2\.png has size 24x24 but image "
                                         r"\S*test/images/2\.jpg has size 32x32"):
        module.datasets["test"][0]


def test_prepare_defaults_to_the_index_split_without_celeba_files(tmp_path: Path) -> None:
    raw, out = build_celebamask_raw_tree(tmp_path / "raw", indices=(0, 27999, 28000, 29999)), tmp_path / "out"
    (raw / "list_eval_partition.txt").unlink()
    (raw / "CelebA-HQ-to-CelebA-mapping.txt").unlink()
    prepare_main([str(raw), str(out)])
    assert sorted(p.name for p in (out / "train/images").iterdir()) == ["0.jpg", "27999.jpg"]
    assert sorted(p.name for p in (out / "test/images").iterdir()) == ["28000.jpg", "29999.jpg"]
    assert sorted(p.name for p in (out / "test/labels").iterdir()) == ["28000.png", "29999.png"]


def test_prepare_merges_parts_and_splits_by_celeba_partition(tmp_path: Path) -> None:
    raw, out = build_celebamask_raw_tree(tmp_path / "raw"), tmp_path / "out"
    prepare_main([str(raw), str(out), "--split", "celeba_partition"])
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
        prepare_main([str(raw), str(out), "--split", "celeba_partition"])
    prepare_main([str(raw), str(out), "--split", "celeba_partition", "--overwrite"])


def test_celeba_partition_split_requires_the_partition_file(tmp_path: Path) -> None:
    raw = build_celebamask_raw_tree(tmp_path / "raw")
    (raw / "list_eval_partition.txt").unlink()
    with pytest.raises(FileNotFoundError, match="list_eval_partition.txt"):
        prepare_main([str(raw), str(tmp_path / "out"), "--split", "celeba_partition"])
