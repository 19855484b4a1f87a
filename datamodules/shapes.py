"""Built-in synthetic ``shapes`` dataset: generated once, then read back through the ADE20K loader.

Layout under ``root`` (the ADE20K layout without the ``ADEChallengeData2016`` folder, plus a ``test`` split):
``images/<split>/*.png``, ``annotations/<split>/*.png`` (uint8 file ids, ADE convention: id 0 = "other" is
never drawn, ids 1..6 = sky, ground, water, disc, square, triangle), ``annotations_instance/<split>/*.png``
(uint16 instance ids) and ``manifest.json`` with the generation arguments. After the ADE remap (id - 1,
0 -> 6) the classes are 0..5 plus the unused "other" class 6: ``num_classes`` = 7, ``label_channels`` = 8.
"""

import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from datamodules.ade20k import ADE20KDataModule
from datamodules.semantic_base import LabelSpec, ade_style_remap, to_hw
from datamodules.shapes_render import SHAPES_CLASS_NAMES, render_layout

SHAPES_VERSION = 1
SHAPES_SPLITS = ("training", "validation", "test")


def shapes_manifest(seed: int, image_size: tuple[int, int], counts: dict[str, int]) -> dict[str, Any]:
    """The generation arguments that fully determine a shapes tree."""
    return {
        "dataset": "condiff-shapes",
        "version": SHAPES_VERSION,
        "seed": seed,
        "image_size": list(image_size),
        "counts": dict(counts),
    }


def _write_png(path: Path, array: np.ndarray) -> None:
    if not cv2.imwrite(str(path), array):
        raise OSError(f"could not write {path}")


def _write_tree(root: Path, manifest: dict[str, Any]) -> None:
    height, width = manifest["image_size"]
    for split_index, split in enumerate(SHAPES_SPLITS):
        rng = np.random.default_rng([manifest["seed"], split_index])
        folders = [root / kind / split for kind in ("images", "annotations", "annotations_instance")]
        for folder in folders:
            folder.mkdir(parents=True)
        for index in range(manifest["counts"][split]):
            sample = render_layout(height, width, rng)
            name = f"shapes_{split}_{index:06d}.png"
            _write_png(folders[0] / name, cv2.cvtColor(sample.image, cv2.COLOR_RGB2BGR))
            _write_png(folders[1] / name, sample.label)
            _write_png(folders[2] / name, sample.instance)
    (root / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")


def generate_shapes(root: str | Path, manifest: dict[str, Any]) -> bool:
    """Write the shapes tree described by ``manifest`` to ``root`` unless the same tree is already there.

    The tree is written to a temporary sibling folder and renamed into place, so an interrupted run never
    leaves a half-written tree. Returns whether anything was generated.

    Raises:
        ValueError: ``root`` holds a tree made with other arguments, or is a non-empty folder without a manifest.
    """
    root = Path(root)
    manifest_path = root / "manifest.json"
    if manifest_path.is_file():
        existing = json.loads(manifest_path.read_text())
        if existing != manifest:
            raise ValueError(
                f"{root} already holds a shapes dataset generated with {existing}, which differs from the "
                f"requested {manifest}; pick another root or delete {root} to regenerate"
            )
        return False
    if root.exists() and (not root.is_dir() or any(root.iterdir())):
        raise ValueError(f"{root} exists and is not a shapes dataset (no manifest.json); pick another root")
    root.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{root.name}-", dir=root.parent))
    try:
        _write_tree(staging, manifest)
        if root.exists():
            root.rmdir()
        os.replace(staging, root)
    finally:
        if staging.exists():
            shutil.rmtree(staging)
    return True


class ShapesDataModule(ADE20KDataModule):
    """Synthetic layouts (wavy sky/ground/water bands, discs, squares, triangles with touching same-class pairs)
    rendered deterministically from ``seed`` in ``prepare_data`` and read back through the ADE20K loader.

    Args:
        root: where the generated tree lives (created on first use).
        image_size: generated and served size, an int (square) or ``(height, width)``.
        num_train: layouts in the ``training`` split.
        num_val: layouts in the ``validation`` split.
        num_test: layouts in the ``test`` split.
        seed: generation seed; the tree is a pure function of (seed, sizes, version).
        use_instances: serve instance maps (adds the instance-edge channel).
        test_split: split used by ``test``/``predict``.
        **kwargs: loader and augmentation options of :class:`SemanticDataModule`.
    """

    dataset_dir = ""

    def __init__(
        self,
        root: str = "data/shapes",
        image_size: int | tuple[int, int] = 32,
        num_train: int = 3000,
        num_val: int = 200,
        num_test: int = 200,
        seed: int = 0,
        use_instances: bool = True,
        test_split: str = "test",
        **kwargs: Any,
    ) -> None:
        counts = {"training": num_train, "validation": num_val, "test": num_test}
        if min(counts.values()) < 1:
            raise ValueError(f"every shapes split needs at least one layout, got {counts}")
        super().__init__(
            root,
            image_size=image_size,
            use_instances=use_instances,
            train_split="training",
            val_split="validation",
            test_split=test_split,
            **kwargs,
        )
        self.manifest = shapes_manifest(seed, to_hw(image_size), counts)

    @staticmethod
    def label_spec(use_instances: bool) -> LabelSpec:
        num_classes = len(SHAPES_CLASS_NAMES)
        return LabelSpec(
            num_classes=num_classes,
            instances="file" if use_instances else "none",
            remap=ade_style_remap(num_classes),
            class_names=SHAPES_CLASS_NAMES,
        )

    def prepare_data(self) -> None:
        generate_shapes(self.root, self.manifest)
