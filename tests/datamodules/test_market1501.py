import pytest
import torch
from person_trees import skeleton, write_market_tree

from datamodules.market1501 import Market1501DataModule


def _module(root, **kwargs):
    module = Market1501DataModule(str(root), batch_size=2, num_workers=0, pin_memory=False, **kwargs)
    module.setup("fit")
    return module


@pytest.mark.parametrize("photo_dir", ["bounding_box_{}", "{}"], ids=["raw-release", "patn-gfla"])
def test_native_128x64_batches(tmp_path, photo_dir):
    module = _module(write_market_tree(tmp_path, photo_dir_pattern=photo_dir))
    assert module.datasets["test"].samples[0].target.image_path.parent == tmp_path / photo_dir.format("test")
    assert module.image_size == (128, 64) and module.pose_channels == 20
    assert len(module.datasets["train"]) == 6 and len(module.datasets["test"]) == 2
    batch = next(iter(module.train_dataloader()))
    assert batch["source"].shape == batch["target"].shape == (2, 3, 128, 64)
    assert batch["source_pose"].shape == batch["target_pose"].shape == (2, 20, 128, 64)
    assert batch["source"].dtype == batch["source_pose"].dtype == torch.float32
    assert -1 <= batch["source"].min() and batch["source"].max() <= 1
    assert 0 <= batch["target_pose"].min() and batch["target_pose"].max() <= 1


def test_csv_keypoints_follow_the_image_scale(tmp_path):
    module = _module(write_market_tree(tmp_path), image_size=64, scale_augmentation=0.0, flip_prob=0.0,
                     pose_encoding="heatmap18", heatmap_sigma=1.0)
    sample = module.datasets["test"][0]
    assert sample["target"].shape == (3, 64, 32) and sample["target_pose"].shape == (18, 64, 32)
    x, y = skeleton((128, 64), 1)[0] / 2  # the target is the second photo; nose of skeleton variant 1
    peak = int(sample["target_pose"][0].argmax())
    assert (peak // 32, peak % 32) == (int(y), int(x))


def test_pair_naming_unannotated_image_names_both_files(tmp_path):
    root = write_market_tree(tmp_path)
    (root / "market-pairs-test.csv").write_text("from,to\n0005_c2s1_000_01.jpg,ghost.jpg\n")
    with pytest.raises(ValueError, match=r"market-pairs-test\.csv.*ghost\.jpg.*market-annotation-test\.csv"):
        _module(root)


def test_missing_photo_and_bad_header_name_the_pair_file(tmp_path):
    root = write_market_tree(tmp_path)
    (root / "bounding_box_train" / "0002_c1s1_001_01.jpg").unlink()
    with pytest.raises(FileNotFoundError, match=r"market-pairs-train\.csv.*0002_c1s1_001_01\.jpg"):
        _module(root)
    (root / "market-pairs-train.csv").write_text("source,target\na,b\n")
    with pytest.raises(ValueError, match=r"market-pairs-train\.csv.*'from,to'"):
        _module(root)


def test_missing_photo_folder_names_both_candidates(tmp_path):
    root = write_market_tree(tmp_path, photo_dir_pattern="{}")
    for photo in (root / "test").iterdir():
        photo.unlink()
    (root / "test").rmdir()
    with pytest.raises(FileNotFoundError, match=r"neither \S*/test nor \S*/bounding_box_test exists"):
        _module(root)
