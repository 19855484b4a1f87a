"""Shared semantic-loader behaviour, exercised through the ADE20K layout."""

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from datamodules.ade20k import ADE20KDataModule
from datamodules.palettes import bit_interleaved_palette
from datamodules.samplers import ResumableSampler
from datamodules.semantic_base import LabelSpec, SemanticImageDataset, build_transform
from datamodules.semantic_files import SemanticSample
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


def write_id_maps(root: Path, image_size: tuple[int, int], map_size: tuple[int, int]) -> SemanticSample:
    """A black photo with 16-bit label and instance maps holding a distinct id per pixel (``row * width + col``)."""
    ids = np.arange(map_size[0] * map_size[1], dtype=np.uint16).reshape(map_size)
    write_image(root / "photo.png", np.zeros((*image_size, 3), np.uint8))
    write_map(root / "label.png", ids)
    write_map(root / "instance.png", ids)
    return SemanticSample(root / "photo.png", root / "label.png", root / "instance.png")


def id_map_dataset(sample: SemanticSample, size: tuple[int, int], train: bool) -> SemanticImageDataset:
    spec = LabelSpec(num_classes=2**16, instances="file")
    transform = build_transform(size, train, "random_resized_crop", flip=False, min_crop_fraction=0.8)
    return SemanticImageDataset([sample], spec, transform)


def pil_nearest(ids: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    return np.array(Image.fromarray(ids.astype(np.int32)).resize(size[::-1], Image.NEAREST))


@pytest.mark.parametrize("size", [(12, 16), (30, 40), (67, 83), (120, 160), (48, 64)])
def test_mask_resizes_pick_the_pixels_pil_nearest_picks(tmp_path: Path, size: tuple[int, int]) -> None:
    """4x down, non-integer down and up, 2.5x up, identity: every id lands where PIL's NEAREST puts it."""
    sample = write_id_maps(tmp_path, (48, 64), (48, 64))
    item = id_map_dataset(sample, size, train=False)[0]
    expected = pil_nearest(np.arange(48 * 64).reshape(48, 64), size)
    np.testing.assert_array_equal(item["label"].numpy(), expected)
    np.testing.assert_array_equal(item["instance"].numpy(), expected)


def pil_nearest_indices(source: int, target: int) -> np.ndarray:
    """The source index PIL's NEAREST picks for each of ``target`` pixels along one axis of length ``source``."""
    return pil_nearest(np.arange(source)[None, :], (1, target))[0]


def is_pil_window(picked: np.ndarray, source: int) -> bool:
    """Whether ``picked`` is a crop of a PIL nearest resize of a ``source``-long axis to some length."""
    length = len(picked)
    return any(
        np.array_equal(indices[offset : offset + length], picked)
        for target in range(length, 2 * source + 1)
        for indices in [pil_nearest_indices(source, target)]
        for offset in range(target - length + 1)
    )


def test_random_resized_crop_masks_are_pil_nearest_windows(tmp_path: Path) -> None:
    sample = write_id_maps(tmp_path, (48, 64), (48, 64))
    dataset = id_map_dataset(sample, (16, 20), train=True)
    torch.manual_seed(0)
    for _ in range(5):
        label = dataset[0]["label"].numpy()
        rows, cols = label // 64, label % 64
        assert (rows == rows[:, :1]).all() and (cols == cols[:1]).all()
        assert is_pil_window(rows[:, 0], 48) and is_pil_window(cols[0], 64)


@pytest.mark.parametrize(
    "label_size",
    [(24, 30), (32, 24), (18, 24), (36, 48)],
    ids=["other-aspect", "swapped-sides", "factor-3/4", "factor-3/2"],
)
def test_label_size_mismatch_names_both_files_and_sizes(tmp_path: Path, label_size: tuple[int, int]) -> None:
    write_split_image(tmp_path, "odd", np.zeros((24, 32, 3), np.uint8), np.zeros(label_size, np.uint8))
    height, width = label_size
    with pytest.raises(
        ValueError,
        match=rf"label map \S*annotations/validation/odd\.png has size {height}x{width} "
        rf"but image \S*images/validation/odd\.png has size 24x32",
    ):
        first_item(make_module(tmp_path))


def test_maps_an_integer_factor_apart_are_resized_to_the_image(tmp_path: Path) -> None:
    sample = write_id_maps(tmp_path, (24, 32), (48, 64))
    item = id_map_dataset(sample, (24, 32), train=False)[0]
    expected = pil_nearest(np.arange(48 * 64).reshape(48, 64), (24, 32))
    np.testing.assert_array_equal(item["label"].numpy(), expected)
    np.testing.assert_array_equal(item["instance"].numpy(), expected)


def test_instance_size_mismatch_names_both_files_and_sizes(tmp_path: Path) -> None:
    build_ade20k_tree(tmp_path, size=(24, 32), instances=True)
    bad = tmp_path / ADE / "annotations_instance" / "validation" / "ADE_validation_00000000.png"
    write_map(bad, np.zeros((20, 32), np.uint16))
    with pytest.raises(
        ValueError,
        match=r"instance map \S*ADE_validation_00000000\.png has size 20x32 "
        r"but image \S*ADE_validation_00000000\.jpg has size 24x32",
    ):
        first_item(make_module(tmp_path, use_instances=True))
