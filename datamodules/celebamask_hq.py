"""CelebAMask-HQ face parsing maps for semantic image synthesis (prepared by ``prepare_celebamask_hq``)."""

from pathlib import Path
from typing import Any

from datamodules.semantic_base import LabelSpec, SemanticDataModule
from datamodules.semantic_files import IMAGE_SUFFIXES, SemanticSample, index_files, pair_files, relative_stem

# The standard merge order; later parts overwrite earlier ones when masks overlap.
CELEBAMASK_HQ_CLASS_NAMES = (
    "background", "skin", "nose", "eye_g", "l_eye", "r_eye", "l_brow", "r_brow", "l_ear", "r_ear", "mouth",
    "u_lip", "l_lip", "hair", "hat", "ear_r", "neck_l", "neck", "cloth",
)  # fmt: skip


class CelebAMaskHQDataModule(SemanticDataModule):
    """CelebAMask-HQ: ``root/<split>/images/*`` and ``root/<split>/labels/*.png`` (19 classes, 0 = background).

    As in SDM, the label map doubles as the instance map, so the model's edge channel traces part boundaries
    (``label_channels`` = 20). Images and labels pair by file stem. Labels an integer factor smaller than their
    photos (the release's 512² masks of 1024² photos) are resized to the photo's size, nearest at pixel centres.

    Args:
        root: prepared dataset root (see ``python -m datamodules.prepare_celebamask_hq``).
        image_size: output size, an int (square) or ``(height, width)``.
        use_instances: serve the label map as ``instance`` (adds the edge channel).
        train_split: training split folder name.
        val_split: validation split folder name.
        test_split: split folder used by ``test``/``predict``.
        **kwargs: loader and augmentation options of :class:`SemanticDataModule`.
    """

    def __init__(
        self,
        root: str,
        image_size: int | tuple[int, int] = 256,
        use_instances: bool = True,
        train_split: str = "train",
        val_split: str = "test",
        test_split: str = "test",
        **kwargs: Any,
    ) -> None:
        spec = LabelSpec(
            num_classes=len(CELEBAMASK_HQ_CLASS_NAMES),
            instances="label" if use_instances else "none",
            class_names=CELEBAMASK_HQ_CLASS_NAMES,
        )
        super().__init__(
            root,
            spec=spec,
            image_size=image_size,
            train_split=train_split,
            val_split=val_split,
            test_split=test_split,
            **kwargs,
        )

    def find_samples(self, split: str) -> list[SemanticSample]:
        image_dir, label_dir = (Path(self.root) / split / kind for kind in ("images", "labels"))
        images = index_files(image_dir, IMAGE_SUFFIXES, relative_stem(image_dir))
        labels = index_files(label_dir, (".png",), relative_stem(label_dir))
        return pair_files(images, labels)
