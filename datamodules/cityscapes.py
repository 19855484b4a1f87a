"""Cityscapes (fine annotations, raw labelIds) for semantic image synthesis."""

from pathlib import Path
from typing import Any, Literal

import numpy as np

from datamodules.semantic_base import LabelSpec, SemanticDataModule, TrainTransform
from datamodules.semantic_files import SemanticSample, index_files, pair_files, relative_stem

# labelIds 0..33 of cityscapesScripts; 34 is the slot SPADE's label_nc=35 leaves for "license plate" (id -1 there).
CITYSCAPES_CLASS_NAMES = (
    "unlabeled", "ego vehicle", "rectification border", "out of roi", "static", "dynamic", "ground", "road",
    "sidewalk", "parking", "rail track", "building", "wall", "fence", "guard rail", "bridge", "tunnel", "pole",
    "polegroup", "traffic light", "traffic sign", "vegetation", "terrain", "sky", "person", "rider", "car", "truck",
    "bus", "caravan", "trailer", "train", "motorcycle", "bicycle", "license plate",
)  # fmt: skip

InstanceBitDepth = Literal[8, 16]


def saturate_to_8_bit(instance_ids: np.ndarray) -> np.ndarray:
    """The official loader's PIL mode "L" conversion of 16-bit instance ids: every id >= 255 becomes 255."""
    return np.minimum(instance_ids, 255)


class CityscapesDataModule(SemanticDataModule):
    """Cityscapes: ``root/leftImg8bit/<split>/<city>/*_leftImg8bit.png`` with ``root/gtFine/<split>/<city>/``
    ``*_gtFine_labelIds.png`` (35 classes, 0 = unlabeled, no remap) and 16-bit ``*_gtFine_instanceIds.png``.

    Files pair on ``<city>/<city>_<seq>_<frame>``. Instance maps are read at full bit depth by default, so adjacent
    objects of one class (ids ``class * 1000 + k``) keep distinct ids and the edge map separates them. Default size
    256×512; training defaults to the official aspect-keeping resize without crop (``train_transform="resize"``)
    plus flips.

    Args:
        root: Cityscapes root (contains ``leftImg8bit`` and ``gtFine``).
        image_size: output size, an int (square) or ``(height, width)``.
        use_instances: read instance maps (adds the instance-edge channel).
        train_split: training split folder name.
        val_split: validation split folder name.
        test_split: split folder used by ``test``/``predict``.
        train_transform: ``"resize"`` (official) or ``"random_resized_crop"``.
        instance_bit_depth: ``16`` reads the instance ids as stored; ``8`` reproduces the official loader, which
            converts the 16-bit PNG to PIL mode "L" and so saturates every id >= 255 to 255: all thing instances
            (ids ``class * 1000 + k``) merge into one value, losing the edges between touching objects, while stuff
            ids (< 255) keep theirs. Use it only to match the official numbers.
        **kwargs: loader and augmentation options of :class:`SemanticDataModule`.
    """

    def __init__(
        self,
        root: str,
        image_size: int | tuple[int, int] = (256, 512),
        use_instances: bool = True,
        train_split: str = "train",
        val_split: str = "val",
        test_split: str = "val",
        train_transform: TrainTransform = "resize",
        instance_bit_depth: InstanceBitDepth = 16,
        **kwargs: Any,
    ) -> None:
        if instance_bit_depth not in (8, 16):
            raise ValueError(f"instance_bit_depth must be 8 or 16, got {instance_bit_depth!r}")
        spec = LabelSpec(
            num_classes=len(CITYSCAPES_CLASS_NAMES),
            instances="file" if use_instances else "none",
            class_names=CITYSCAPES_CLASS_NAMES,
            instance_remap=saturate_to_8_bit if instance_bit_depth == 8 else None,
        )
        super().__init__(
            root,
            spec=spec,
            image_size=image_size,
            train_split=train_split,
            val_split=val_split,
            test_split=test_split,
            train_transform=train_transform,
            **kwargs,
        )
        self.use_instances = use_instances
        self.instance_bit_depth = instance_bit_depth

    def find_samples(self, split: str) -> list[SemanticSample]:
        image_dir = Path(self.root) / "leftImg8bit" / split
        label_dir = Path(self.root) / "gtFine" / split
        images = index_files(image_dir, ("_leftImg8bit.png",), relative_stem(image_dir, "_leftImg8bit"))
        labels = index_files(label_dir, ("_gtFine_labelIds.png",), relative_stem(label_dir, "_gtFine_labelIds"))
        instances = None
        if self.use_instances:
            suffix = "_gtFine_instanceIds"
            instances = index_files(label_dir, (suffix + ".png",), relative_stem(label_dir, suffix))
        return pair_files(images, labels, instances)
