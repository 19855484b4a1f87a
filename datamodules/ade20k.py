"""ADE20K (SceneParsing, ``ADEChallengeData2016``) for semantic image synthesis."""

from pathlib import Path
from typing import Any

from datamodules.semantic_base import LabelSpec, SemanticDataModule, ade_style_remap
from datamodules.semantic_files import IMAGE_SUFFIXES, SemanticSample, index_files, pair_files, relative_stem

ADE20K_CLASS_NAMES = (
    "wall", "building", "sky", "floor", "tree", "ceiling", "road", "bed", "windowpane", "grass", "cabinet",
    "sidewalk", "person", "earth", "door", "table", "mountain", "plant", "curtain", "chair", "car", "water",
    "painting", "sofa", "shelf", "house", "sea", "mirror", "rug", "field", "armchair", "seat", "fence", "desk",
    "rock", "wardrobe", "lamp", "bathtub", "railing", "cushion", "base", "box", "column", "signboard",
    "chest of drawers", "counter", "sand", "sink", "skyscraper", "fireplace", "refrigerator", "grandstand", "path",
    "stairs", "runway", "case", "pool table", "pillow", "screen door", "stairway", "river", "bridge", "bookcase",
    "blind", "coffee table", "toilet", "flower", "book", "hill", "bench", "countertop", "stove", "palm",
    "kitchen island", "computer", "swivel chair", "boat", "bar", "arcade machine", "hovel", "bus", "towel",
    "light", "truck", "tower", "chandelier", "awning", "streetlight", "booth", "television receiver", "airplane",
    "dirt track", "apparel", "pole", "land", "bannister", "escalator", "ottoman", "bottle", "buffet", "poster",
    "stage", "van", "ship", "fountain", "conveyer belt", "canopy", "washer", "plaything", "swimming pool", "stool",
    "barrel", "basket", "waterfall", "tent", "bag", "minibike", "cradle", "oven", "ball", "food", "step", "tank",
    "trade name", "microwave", "pot", "animal", "bicycle", "lake", "dishwasher", "screen", "blanket", "sculpture",
    "hood", "sconce", "vase", "traffic light", "tray", "ashcan", "fan", "pier", "crt screen", "plate", "monitor",
    "bulletin board", "shower", "radiator", "glass", "clock", "flag", "other",
)  # fmt: skip


class ADE20KDataModule(SemanticDataModule):
    """ADE20K: ``root/ADEChallengeData2016/{images,annotations}/<split>/`` with ``.jpg`` images and ``.png`` labels.

    Label files hold 0..K with 0 = "other"; they are remapped to ``id - 1`` with 0 -> K (the official SDM/SPADE
    convention), giving K + 1 classes (151 for ADE20K, "other" = 150). Images and labels pair by file stem.

    Args:
        root: folder that contains ``ADEChallengeData2016``.
        image_size: output size, an int (square) or ``(height, width)``.
        use_instances: also read ``annotations_instance/<split>/*.png`` (single-channel id maps, e.g. those of
            ``shapes``; ADE20K's own instance release packs class/instance into RGB and needs converting first).
        train_split: training split folder name.
        val_split: validation split folder name.
        test_split: split folder used by ``test``/``predict``.
        **kwargs: loader and augmentation options of :class:`SemanticDataModule` (``batch_size``,
            ``num_workers``, ``train_transform``, ``flip``, ...).
    """

    dataset_dir = "ADEChallengeData2016"

    def __init__(
        self,
        root: str,
        image_size: int | tuple[int, int] = 256,
        use_instances: bool = False,
        train_split: str = "training",
        val_split: str = "validation",
        test_split: str = "validation",
        **kwargs: Any,
    ) -> None:
        super().__init__(
            root,
            spec=self.label_spec(use_instances),
            image_size=image_size,
            train_split=train_split,
            val_split=val_split,
            test_split=test_split,
            **kwargs,
        )
        self.use_instances = use_instances

    @staticmethod
    def label_spec(use_instances: bool) -> LabelSpec:
        """Label semantics; subclasses with other classes override this."""
        num_classes = len(ADE20K_CLASS_NAMES)
        return LabelSpec(
            num_classes=num_classes,
            instances="file" if use_instances else "none",
            remap=ade_style_remap(num_classes),
            class_names=ADE20K_CLASS_NAMES,
        )

    def find_samples(self, split: str) -> list[SemanticSample]:
        base = Path(self.root) / self.dataset_dir
        folders = {kind: base / kind / split for kind in ("images", "annotations", "annotations_instance")}
        images = index_files(folders["images"], IMAGE_SUFFIXES, relative_stem(folders["images"]))
        labels = index_files(folders["annotations"], (".png",), relative_stem(folders["annotations"]))
        instances = None
        if self.use_instances:
            folder = folders["annotations_instance"]
            instances = index_files(folder, (".png",), relative_stem(folder))
        return pair_files(images, labels, instances)
