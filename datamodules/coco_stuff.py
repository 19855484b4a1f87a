"""COCO-Stuff (stuffthingmaps, SPADE layout) for semantic image synthesis."""

from functools import partial
from pathlib import Path
from typing import Any

from datamodules.semantic_base import LabelSpec, SemanticDataModule, replace_value
from datamodules.semantic_files import IMAGE_SUFFIXES, SemanticSample, index_files, pair_files, relative_stem

COCO_STUFF_LABELS = 182  # ids 0..181 in the stuffthingmaps; 255 ("unlabeled") becomes class 182


class COCOStuffDataModule(SemanticDataModule):
    """COCO-Stuff in SPADE's layout: ``root/<split>_img/*.jpg``, ``root/<split>_label/*.png`` and optionally
    ``root/<split>_inst/*.png`` (instance maps from SPADE's ``coco_generate_instance_map.py``).

    Labels 0..181 are kept; 255 becomes 182, giving 183 classes (184 label channels with instances).
    Files pair by stem. Class names are not bundled (``class_names`` is ``None``).

    Args:
        root: folder holding the ``<split>_img``/``_label``/``_inst`` folders.
        image_size: output size, an int (square) or ``(height, width)``.
        use_instances: read ``<split>_inst`` maps; ``None`` decides from whether ``root/<train_split>_inst``
            exists when the DataModule is built.
        train_split: training split prefix.
        val_split: validation split prefix.
        test_split: split prefix used by ``test``/``predict``.
        **kwargs: loader and augmentation options of :class:`SemanticDataModule`.
    """

    def __init__(
        self,
        root: str,
        image_size: int | tuple[int, int] = 256,
        use_instances: bool | None = None,
        train_split: str = "train",
        val_split: str = "val",
        test_split: str = "val",
        **kwargs: Any,
    ) -> None:
        if use_instances is None:
            use_instances = (Path(root) / f"{train_split}_inst").is_dir()
        spec = LabelSpec(
            num_classes=COCO_STUFF_LABELS + 1,
            instances="file" if use_instances else "none",
            remap=partial(replace_value, source=255, target=COCO_STUFF_LABELS),
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
        self.use_instances = use_instances

    def find_samples(self, split: str) -> list[SemanticSample]:
        folders = {kind: Path(self.root) / f"{split}_{kind}" for kind in ("img", "label", "inst")}
        images = index_files(folders["img"], IMAGE_SUFFIXES, relative_stem(folders["img"]))
        labels = index_files(folders["label"], (".png",), relative_stem(folders["label"]))
        instances = None
        if self.use_instances:
            instances = index_files(folders["inst"], (".png",), relative_stem(folders["inst"]))
        return pair_files(images, labels, instances)
