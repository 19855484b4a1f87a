"""Builders of tiny dataset trees in each real layout (reusable by other tests, e.g. config smoke tests).

Every builder writes random images and label maps of ``size`` = (height, width) under ``root`` and returns
``root``. Label maps contain in-range raw values for the dataset (including its dontcare value).
"""

from pathlib import Path

import cv2
import numpy as np


def write_image(path: Path, rgb: np.ndarray) -> None:
    """Write an RGB uint8 image (JPEG or PNG by suffix)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    assert cv2.imwrite(str(path), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))


def write_map(path: Path, values: np.ndarray) -> None:
    """Write a single-channel uint8/uint16 PNG index map."""
    path.parent.mkdir(parents=True, exist_ok=True)
    assert cv2.imwrite(str(path), values)


def random_rgb(rng: np.random.Generator, size: tuple[int, int]) -> np.ndarray:
    return rng.integers(0, 256, (*size, 3), dtype=np.uint8)


def random_map(rng: np.random.Generator, size: tuple[int, int], values: list[int]) -> np.ndarray:
    return rng.choice(np.asarray(values, dtype=np.uint8), size)


def build_ade20k_tree(
    root: Path, splits: dict[str, int] | None = None, size: tuple[int, int] = (24, 32), instances: bool = False
) -> Path:
    """``root/ADEChallengeData2016/{images,annotations[,annotations_instance]}/<split>/ADE_<split>_<i>.*``."""
    rng = np.random.default_rng(0)
    base = root / "ADEChallengeData2016"
    for split, count in (splits or {"training": 2, "validation": 2}).items():
        for i in range(count):
            name = f"ADE_{split}_{i:08d}"
            write_image(base / "images" / split / f"{name}.jpg", random_rgb(rng, size))
            write_map(base / "annotations" / split / f"{name}.png", random_map(rng, size, [0, 1, 75, 150]))
            if instances:
                inst = rng.integers(1000, 1003, size).astype(np.uint16)
                write_map(base / "annotations_instance" / split / f"{name}.png", inst)
    return root


def build_cityscapes_tree(root: Path, size: tuple[int, int] = (16, 32)) -> Path:
    """``root/{leftImg8bit,gtFine}/{train,val}/<city>/...``: two frames per split; each label map has two
    touching cars (class 26) with instance ids 26001 and 26002 on a road (7) / unlabeled (0) background."""
    rng = np.random.default_rng(1)
    height, width = size
    for split, city in (("train", "aachen"), ("val", "lindau")):
        for frame in range(2):
            prefix = f"{city}_{frame:06d}_000019"
            label = np.full(size, 7, np.uint8)
            label[: height // 4] = 0
            label[height // 2 :, : width // 2] = 26
            instance = label.astype(np.uint16)
            instance[height // 2 :, : width // 4] = 26001
            instance[height // 2 :, width // 4 : width // 2] = 26002
            write_image(root / "leftImg8bit" / split / city / f"{prefix}_leftImg8bit.png", random_rgb(rng, size))
            gt = root / "gtFine" / split / city
            write_map(gt / f"{prefix}_gtFine_labelIds.png", label)
            write_map(gt / f"{prefix}_gtFine_instanceIds.png", instance)
            write_image(gt / f"{prefix}_gtFine_color.png", random_rgb(rng, size))  # ignored by the loader
    return root


def build_celebamask_hq_tree(
    root: Path, size: tuple[int, int] = (32, 32), label_size: tuple[int, int] | None = None
) -> Path:
    """Prepared layout ``root/{train,test}/{images/<i>.jpg,labels/<i>.png}`` with labels in 0..18.

    ``label_size`` (default ``size``) lets the labels differ from the photos, as the release's 512² masks of 1024²
    photos do.
    """
    rng = np.random.default_rng(2)
    for split, indices in (("train", (0, 1)), ("test", (2, 3))):
        for i in indices:
            write_image(root / split / "images" / f"{i}.jpg", random_rgb(rng, size))
            write_map(root / split / "labels" / f"{i}.png", random_map(rng, label_size or size, [0, 1, 13, 18]))
    return root


def build_coco_stuff_tree(root: Path, size: tuple[int, int] = (24, 32), instances: bool = True) -> Path:
    """SPADE layout ``root/{train,val}_{img,label[,inst]}/<stem>.*`` with labels in 0..181 and 255."""
    rng = np.random.default_rng(3)
    for split in ("train", "val"):
        for i in range(2):
            stem = f"0000000{i:05d}"
            write_image(root / f"{split}_img" / f"{stem}.jpg", random_rgb(rng, size))
            write_map(root / f"{split}_label" / f"{stem}.png", random_map(rng, size, [0, 90, 181, 255]))
            if instances:
                write_map(root / f"{split}_inst" / f"{stem}.png", rng.integers(0, 5, size).astype(np.uint8))
    return root


def build_celebamask_raw_tree(root: Path, indices: tuple[int, ...] = (0, 1, 2), mask_size: int = 16) -> Path:
    """Raw CelebAMask-HQ archive: 2·mask_size images, per-part masks, the HQ->CelebA mapping and CelebA's
    partition file. Index 0 maps to a CelebA train image, the others to val/test images. Masks: skin fills the
    image, hair the top half, and a hat the top-left quarter (so the merge order is observable)."""
    rng = np.random.default_rng(4)
    originals = {0: 5, 1: 162770, 2: 182700}  # 0-based CelebA indices: train, val, test
    mapping = ["idx orig_idx orig_file"]
    partition = []
    for index in indices:
        original = originals.get(index, index)
        mapping.append(f"{index} {original} {original + 1:06d}.jpg")
        part = 0 if original < 162770 else (1 if original < 182637 else 2)
        partition.append(f"{original + 1:06d}.jpg {part}")
        write_image(root / "CelebA-HQ-img" / f"{index}.jpg", random_rgb(rng, (2 * mask_size, 2 * mask_size)))
        folder = root / "CelebAMask-HQ-mask-anno" / str(index // 2000)
        half = mask_size // 2
        for part_name, rows, cols in (("skin", mask_size, mask_size), ("hair", half, mask_size), ("hat", half, half)):
            mask = np.zeros((mask_size, mask_size), np.uint8)
            mask[:rows, :cols] = 255
            write_map(folder / f"{index:05d}_{part_name}.png", mask)
    (root / "CelebA-HQ-to-CelebA-mapping.txt").write_text("\n".join(mapping) + "\n")
    (root / "list_eval_partition.txt").write_text("\n".join(partition) + "\n")
    return root
