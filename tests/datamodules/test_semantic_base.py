"""Shared semantic-loader behaviour, exercised through the ADE20K layout."""

from pathlib import Path

import numpy as np
import pytest
import torch

from datamodules.ade20k import ADE20KDataModule
from datamodules.palettes import bit_interleaved_palette
from datamodules.robust import ResumableSampler
from trees import build_ade20k_tree, write_image, write_map

ADE = "ADEChallengeData2016"


def make_module(root: Path, **kwargs) -> ADE20KDataModule:
    options = dict(image_size=(24, 32), batch_size=2, num_workers=0, pin_memory=False)
    return ADE20KDataModule(str(root), **(options | kwargs))


def first_item(module: ADE20KDataModule, role: str = "test") -> dict:
    module.setup({"train": "fit", "test": "test"}[role])
    return module.datasets[role][0]


def write_split_image(root: Path, name: str, rgb: np.ndarray, label: np.ndarray, split: str = "validation") -> None:
    write_image(root / ADE / "images" / split / f"{name}.png", rgb)
    write_map(root / ADE / "annotations" / split / f"{name}.png", label)


def test_palette_is_fixed_and_distinct() -> None:
    palette = bit_interleaved_palette(151)
    assert palette.dtype == torch.uint8 and palette.shape == (151, 3)
    assert palette[:3].tolist() == [[0, 0, 0], [128, 0, 0], [0, 128, 0]]
    assert len({tuple(c) for c in palette.tolist()}) == 151
    assert torch.equal(palette, bit_interleaved_palette(151))


def test_missing_label_names_the_image(tmp_path: Path) -> None:
    build_ade20k_tree(tmp_path)
    (tmp_path / ADE / "annotations" / "validation" / "ADE_validation_00000001.png").unlink()
    with pytest.raises(ValueError, match=r"ADE_validation_00000001\.jpg has no matching label"):
        make_module(tmp_path).setup("test")


def test_extra_label_is_named(tmp_path: Path) -> None:
    build_ade20k_tree(tmp_path)
    write_map(tmp_path / ADE / "annotations" / "validation" / "stray.png", np.zeros((24, 32), np.uint8))
    with pytest.raises(ValueError, match=r"label file .*stray\.png has no matching image"):
        make_module(tmp_path).setup("test")


def test_missing_split_folder_is_named(tmp_path: Path) -> None:
    build_ade20k_tree(tmp_path)
    with pytest.raises(FileNotFoundError, match="images/nosplit"):
        make_module(tmp_path, test_split="nosplit").setup("test")


def test_out_of_range_label_names_file_and_value(tmp_path: Path) -> None:
    label = np.full((24, 32), 3, np.uint8)
    label[0, 0] = 200  # ADE remap: 200 -> 199 > 150
    write_split_image(tmp_path, "bad", np.zeros((24, 32, 3), np.uint8), label)
    with pytest.raises(ValueError, match=r"bad\.png contains class 199"):
        first_item(make_module(tmp_path))


def test_size_mismatch_names_both_files(tmp_path: Path) -> None:
    write_split_image(tmp_path, "odd", np.zeros((24, 32, 3), np.uint8), np.zeros((24, 30), np.uint8))
    with pytest.raises(ValueError, match=r"annotations/validation/odd\.png.*images/validation/odd\.png"):
        first_item(make_module(tmp_path))


def test_corrupt_image_is_named(tmp_path: Path) -> None:
    write_split_image(tmp_path, "broken", np.zeros((24, 32, 3), np.uint8), np.zeros((24, 32), np.uint8))
    (tmp_path / ADE / "images" / "validation" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\nnot really")
    with pytest.raises(ValueError, match=r"cannot read image file .*broken\.png"):
        first_item(make_module(tmp_path))


def two_class_tree(root: Path, split: str, size: tuple[int, int]) -> None:
    """Left third class 5 painted red, the rest class 9 painted blue (file ids 6 and 10)."""
    height, width = size
    label = np.full(size, 10, np.uint8)
    label[:, : width // 3] = 6
    rgb = np.zeros((*size, 3), np.uint8)
    rgb[label == 6] = (255, 0, 0)
    rgb[label == 10] = (0, 0, 255)
    write_split_image(root, "asym", rgb, label, split)


def assert_colours_follow_labels(item: dict) -> None:
    red = item["image"][0] > 0.5
    assert torch.equal(red, item["label"] == 5)
    assert set(item["label"].unique().tolist()) == {5, 9}


def test_flip_moves_image_and_label_together(tmp_path: Path) -> None:
    for split in ("training", "validation"):
        two_class_tree(tmp_path, split, (16, 24))
    module = make_module(tmp_path, image_size=(16, 24), batch_size=1, train_transform="resize", flip=True)
    module.setup("fit")
    assert_colours_follow_labels(module.datasets["val"][0])  # evaluation never flips
    assert module.datasets["val"][0]["label"][0, 0] == 5
    dataset = module.datasets["train"]
    left_red = set()
    for _ in range(40):
        item = dataset[0]
        assert_colours_follow_labels(item)
        left_red.add(bool(item["label"][0, 0] == 5))
    assert left_red == {True, False}  # both orientations occurred


def test_random_resized_crop_keeps_alignment_and_size(tmp_path: Path) -> None:
    for split in ("training", "validation"):
        two_class_tree(tmp_path, split, (40, 60))
    module = make_module(tmp_path, image_size=32, batch_size=1, flip=False)
    module.setup("fit")
    dataset = module.datasets["train"]
    for _ in range(10):
        item = dataset[0]
        assert item["image"].shape == (3, 32, 32) and item["label"].shape == (32, 32)
        label = item["label"]
        # Away from the class boundary (interpolation blends colours there) colour and class agree.
        columns = torch.nonzero(label[0] == 5).flatten()
        boundary = int(columns.max()) if len(columns) else -1
        interior = torch.ones(32, dtype=torch.bool)
        interior[max(boundary - 1, 0) : boundary + 3] = False
        assert torch.equal((item["image"][0] > 0)[:, interior], (label == 5)[:, interior])


def test_loaders_shuffle_train_and_keep_eval_order(tmp_path: Path) -> None:
    build_ade20k_tree(tmp_path, splits={"training": 3, "validation": 3})
    module = make_module(tmp_path)
    module.setup("fit")
    train, val = module.train_dataloader(), module.val_dataloader()
    assert train.drop_last and len(train) == 1
    assert not val.drop_last and len(val) == 2
    assert isinstance(train.sampler, ResumableSampler) and train.sampler.shuffle
    assert isinstance(val.sampler, torch.utils.data.SequentialSampler)
    paths = [p for batch in val for p in batch["path"]]
    assert paths == sorted(paths)


def test_training_split_smaller_than_batch_is_an_error(tmp_path: Path) -> None:
    build_ade20k_tree(tmp_path)
    with pytest.raises(ValueError, match="fewer than batch_size=4"):
        make_module(tmp_path, batch_size=4).setup("fit")
