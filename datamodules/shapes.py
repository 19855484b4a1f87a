"""Built-in synthetic ``shapes`` dataset: generated once, then read back through the ADE20K loader.

Layout under ``root`` (the ADE20K layout without the ``ADEChallengeData2016`` folder, plus a ``test`` split):
``images/<split>/*.png``, ``annotations/<split>/*.png`` (uint8 file ids, ADE convention: id 0 = "other" is
never drawn, ids 1..6 = sky, ground, water, disc, square, triangle), ``annotations_instance/<split>/*.png``
(uint16 instance ids) and ``manifest.json`` with the generation arguments. After the ADE remap (id - 1,
0 -> 6) the classes are 0..5 plus the unused "other" class 6: ``num_classes`` = 7, ``label_channels`` = 8.
"""

from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

from datamodules.ade20k import ADE20KDataModule
from datamodules.builtin_data import generate_once
from datamodules.image_files import write_png
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


def _write_tree(root: Path, manifest: dict[str, Any]) -> None:
    height, width = manifest["image_size"]
    for split_index, split in enumerate(SHAPES_SPLITS):
        rng = np.random.default_rng([manifest["seed"], split_index])
        for index in range(manifest["counts"][split]):
            sample = render_layout(height, width, rng)
            name = f"shapes_{split}_{index:06d}.png"
            write_png(root / "images" / split / name, sample.image)
            write_png(root / "annotations" / split / name, sample.label)
            write_png(root / "annotations_instance" / split / name, sample.instance)


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
        generate_once(self.root, self.manifest, partial(_write_tree, manifest=self.manifest), "shapes")
