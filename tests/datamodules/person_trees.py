"""Builders of tiny person-dataset trees in the real layouts (GFLA/NTED DeepFashion, PATN DeepFashion, Market-1501).

Every photo is the official RGB skeleton of its own keypoints drawn on black, so a test can check that an image and
the pose rendered for it stay aligned under augmentation. Skeletons lean to the image's left so that a horizontal
flip is detectable.
"""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np

from datamodules.keypoints import MISSING, save_keypoints_txt, to_txt_frame
from datamodules.pose_rendering import render_official_pose

# An asymmetric skeleton in a unit box (x, y in [0, 1]); the left wrist (7) is missing.
_UNIT_SKELETON = np.array([
    [0.30, 0.10], [0.30, 0.22], [0.18, 0.23], [0.10, 0.40], [0.08, 0.55], [0.45, 0.24], [0.60, 0.35],
    [-1.0, -1.0], [0.22, 0.52], [0.18, 0.72], [0.15, 0.92], [0.40, 0.52], [0.45, 0.72], [0.50, 0.92],
    [0.27, 0.08], [0.34, 0.08], [0.22, 0.10], [0.38, 0.10],
])


def skeleton(image_size: tuple[int, int], variant: int) -> np.ndarray:
    """Image-frame keypoints ``(18, 2)`` of the test skeleton, slightly shifted per ``variant``."""
    height, width = image_size
    points = _UNIT_SKELETON.copy()
    visible = points[:, 0] != MISSING
    points[visible] = np.round(points[visible] * (width - 1, height - 1) + (variant % 3, variant % 2))
    return points


def skeleton_photo(keypoints: np.ndarray, image_size: tuple[int, int]) -> np.ndarray:
    """uint8 RGB photo: the official skeleton drawing of ``keypoints``."""
    pose = render_official_pose(keypoints, *image_size)[:3]
    return (pose.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)


def write_image(path: Path, rgb: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    assert cv2.imwrite(str(path), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))


def write_gfla_tree(root: Path, image_size: tuple[int, int] = (64, 44), suffix: str = ".jpg") -> Path:
    """DeepFashion GFLA/NTED layout: 2 train identities with 3 images, 1 test identity with 2 images.

    Pair lists always spell ``.jpg`` (as the official lists do); the files on disk use ``suffix``.
    """
    lines: dict[str, list[str]] = {"train_pairs": [], "test_pairs": [], "train": [], "test": []}
    for identity, (split, count) in enumerate((("train", 3), ("train", 3), ("test", 2))):
        names = [f"img/WOMEN/Dresses/id_{identity:08d}/0{view}_1_front.jpg" for view in range(count)]
        for variant, name in enumerate(names):
            keypoints = skeleton(image_size, variant + identity)
            write_image(root / Path(name).with_suffix(suffix), skeleton_photo(keypoints, image_size))
            pose_path = root / Path(name.replace("img/", "pose/", 1)).with_suffix(".txt")
            pose_path.parent.mkdir(parents=True, exist_ok=True)
            save_keypoints_txt(pose_path, to_txt_frame(keypoints, image_size))
        lines[split] += names
        if split == "train":
            lines["train_pairs"] += [",".join([n] + [m for m in names if m != n]) for n in names]
        else:
            lines["test_pairs"].append(f"{names[0]},{names[1]}")
    for stem, content in lines.items():
        (root / (stem + (".txt" if stem.endswith("pairs") else ".lst"))).write_text("\n".join(content) + "\n")
    return root


def _write_patn_split(root: Path, prefix: str, image_dir: str, split: str, names: list[str],
                      image_size: tuple[int, int]) -> None:
    rows = ["name:keypoints_y:keypoints_x"]
    for variant, name in enumerate(names):
        keypoints = skeleton(image_size, variant)
        write_image(root / image_dir / name, skeleton_photo(keypoints, image_size))
        ys, xs = keypoints[:, 1].astype(int).tolist(), keypoints[:, 0].astype(int).tolist()
        rows.append(f"{name}:{json.dumps(ys)}:{json.dumps(xs)}")
    (root / f"{prefix}-annotation-{split}.csv").write_text("\n".join(rows) + "\n")
    pairs = ["from,to"] + [f"{names[i]},{names[(i + 1) % len(names)]}" for i in range(len(names))]
    (root / f"{prefix}-pairs-{split}.csv").write_text("\n".join(pairs) + "\n")


def write_patn_fashion_tree(root: Path, image_size: tuple[int, int] = (64, 44)) -> Path:
    """DeepFashion PATN layout: 3 train and 2 test photos in ``train/`` and ``test/``, pairs in a cycle."""
    train_names = [f"fashionWOMENid{i}front.jpg" for i in range(3)]
    _write_patn_split(root, "fashion-resize", "train", "train", train_names, image_size)
    test_names = [f"fashionMENid{i}side.jpg" for i in range(2)]
    _write_patn_split(root, "fashion-resize", "test", "test", test_names, image_size)
    return root


def write_market_tree(
    root: Path, image_size: tuple[int, int] = (128, 64), photo_dir_pattern: str = "bounding_box_{}"
) -> Path:
    """Market-1501 PATN layout: 3 train and 2 test photos in ``photo_dir_pattern`` formatted with the split (the raw
    release's ``bounding_box_{train,test}/`` by default, ``"{}"`` for PATN/GFLA's ``train/`` and ``test/``)."""
    _write_patn_split(root, "market", photo_dir_pattern.format("train"), "train",
                      [f"0002_c1s1_00{i}_01.jpg" for i in range(3)], image_size)
    _write_patn_split(root, "market", photo_dir_pattern.format("test"), "test",
                      [f"0005_c2s1_00{i}_01.jpg" for i in range(2)], image_size)
    return root
